"""
Pictures as matplotlib Figures, and files written whole: a grid of images
with captions, a grid saved as PNG, arrays saved as .npz. Compute returns
arrays; these take arrays and return a Figure (no display needed).

    from filtervis import plots
    fig = plots.plot_images(images, captions, title='conv3_2')   # images [N, H, W, C], any range
    plots.save_grid(images, 'grid.png', captions)
    plots.save_arrays('out.npz', images=images)
"""

import os

import numpy as np
from matplotlib.figure import Figure

from filtervis.analysis.examples import patches, receptive_field
from filtervis.util import files, pictures

def plot_image(image, title=None, size=4):
    """A Figure showing one image [H, W, 3] or [H, W, 1] (any range; scaled by normalize_image)."""
    fig = Figure(figsize=(size, size), layout='constrained')
    ax = fig.add_subplot(1, 1, 1)
    pictures.show(ax, image)
    ax.axis('off')
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def plot_images(images, captions=None, title=None, ncols=3, size=4, scale=True, alphas=None):
    """A Figure with a grid of any number of images [N, H, W, 3] or [N, H, W, 1], each scaled by itself.

    captions: one string per image, shown under it; title: shown above the grid.
    scale: False shows pixels 0..255 as they are (pictures.show). alphas: None, or float [N, H, W], 0..1:
    each picture's opacity (--transparency).
    """
    images = list(images)
    if not images:
        raise ValueError('plot_images needs at least one image')
    if captions is not None and len(captions) != len(images):
        raise ValueError('%d captions for %d images' % (len(captions), len(images)))
    if alphas is not None and len(alphas) != len(images):
        raise ValueError('%d alpha maps for %d images' % (len(alphas), len(images)))
    ncols = max(1, min(ncols, len(images)))
    nrows = (len(images) + ncols - 1) // ncols
    # Constrained layout keeps captions clear of the row below and the title clear of the top row.
    fig = Figure(figsize=(size * ncols, size * nrows + (0.5 if title else 0)), layout='constrained')
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= len(images):
            ax.axis('off')
            continue
        pictures.show(ax, images[i], scale, None if alphas is None else alphas[i])
        if captions is not None:
            ax.set_xlabel(captions[i], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def save_figure(fig, path, dpi=100):
    """Save a Figure to PNG without ever leaving half a file at `path`."""
    files.check_output(path)
    return files.write_atomic(path, lambda f: fig.savefig(f, dpi=dpi, format='png'))


def save_grid(images, path, captions=None, title=None, ncols=3, size=4, scale=True, alphas=None):
    """plot_images() saved to a PNG file; returns the path."""
    return save_figure(plot_images(images, captions, title, ncols, size, scale, alphas), path)


def save_arrays(path, **arrays):
    """np.savez to `path` without ever leaving half a file there."""
    files.check_output(path)
    return files.write_atomic(path, lambda f: np.savez(f, **arrays))



def plot_examples(synthetic_images, patches, captions=None, *, synthetic_captions=None, row_labels=None,
                  title=None, tile=1.1):
    """A Figure with one row per filter: its synthetic picture (if given), then its top patches.

    synthetic_images: None or [rows, S, S, 3] (any range; each scaled by its
    own min and max). patches: one float32 [n, p, p, 3] array per row, RGB
    0..255, shown as they are (n may differ between rows, p between layers).
    captions: per row, one string per patch; synthetic_captions: one string
    per synthetic picture (default 'synthetic'); row_labels: one string per
    row, shown left of the row; tile: inches per patch (a synthetic picture
    gets twice that).
    """
    patches = [np.asarray(p) for p in patches]
    rows = len(patches)
    if rows == 0:
        raise ValueError('plot_examples needs at least one row of patches')
    if synthetic_images is not None and len(synthetic_images) != rows:
        raise ValueError('%d synthetic pictures for %d rows of patches' % (len(synthetic_images), rows))
    for name, values in (('captions', captions), ('synthetic_captions', synthetic_captions),
                         ('row_labels', row_labels)):
        if values is not None and len(values) != rows:
            raise ValueError('%d %s for %d rows of patches' % (len(values), name, rows))
    first = 1 if synthetic_images is not None else 0
    columns = first + max(1, max(len(p) for p in patches))
    # A synthetic picture is drawn twice as wide as a patch: it holds the whole input, a patch a part.
    widths = [2] * first + [1] * (columns - first)
    height = 2 * tile if first else tile
    fig = Figure(figsize=(tile * sum(widths) + (1.0 if row_labels else 0),
                          (height + 0.3) * rows + (0.6 if title else 0)), layout='constrained')
    axes = fig.subplots(rows, columns, squeeze=False, gridspec_kw={'width_ratios': widths})
    for row in range(rows):
        for column in range(columns):
            ax = axes[row, column]
            ax.set_xticks([])
            ax.set_yticks([])
            number = column - first
            if column < first:
                pictures.show(ax, synthetic_images[row])
                ax.set_xlabel(synthetic_captions[row] if synthetic_captions else 'synthetic', fontsize=7)
            elif number < len(patches[row]):
                pictures.show(ax, patches[row][number], scale=False)
                if captions is not None:
                    ax.set_xlabel(captions[row][number], fontsize=6)
            else:
                ax.set_frame_on(False)   # not axis('off'), which would hide the row label too
                if number == 0:
                    ax.text(0.5, 0.5, 'off on every image', ha='center', va='center', fontsize=7,
                            transform=ax.transAxes)
            if column == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[row], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def rows_of(model, folder, found, filters=None):
    """[(layer, filter, patches float32 [n, p, p, 3], records)], one per (layer, filter) pair, in order.

    filters: the pairs (layer name or index, filter id) to give rows for, each
    one that find() looked for; a pair given twice gets its row twice (as
    when the same filter was ascended twice). Default found.filters.
    n is 0 for a filter that fired on no image.
    """
    groups = {key: [] for key in found.filters}
    for record in found.records:
        groups[record['layer'], record['filter']].append(record)
    keys = found.filters
    if filters is not None:
        keys = [(model.short_names[model.layer_index(layer)], int(filter_id)) for layer, filter_id in filters]
        missing = [key for key in keys if key not in groups]
        if missing:
            raise ValueError('find() did not look for examples of %s (it was given %s)'
                             % (', '.join('%s filter %d' % key for key in missing),
                                ', '.join('%s filter %d' % key for key in found.filters)))
    rows, tiles_of = [], {}
    for key in keys:
        if key not in tiles_of:
            layer, records = key[0], groups[key]
            side = receptive_field(model, model.layer_index(layer), found.size)[0]
            tiles_of[key] = (patches(model, folder, records, found.size) if records
                             else np.zeros((0, side, side, model.input_channels), np.float32))
        rows.append(key + (tiles_of[key], groups[key]))
    return rows


def plot_found(model, folder, found, synthetic_images=None, synthetic_captions=None, title=None, filters=None,
               maps=None, map_label='map'):
    """plot_examples() of everything find() found: one row per filter, captions file and activation.

    synthetic_images: None, or one picture per row, e.g. Result.images of
    ascent.ascend. filters: the rows' (layer, filter) pairs, repeats
    allowed (see rows_of), e.g. the filter ids that ascend was given;
    default found.filters, the order find() was given the filters in
    without repeats. maps: None, or one attribution map float32 [p, p] per
    record of found.records (attribution.example_maps): each patch is then
    followed by its map over it (pictures.overlay), captioned map_label.
    """
    rows = rows_of(model, folder, found, filters)
    captions = [['%s\n%.3g' % (os.path.splitext(os.path.basename(r['file']))[0], r['activation'])
                 for r in records] for _, _, _, records in rows]
    tiles = [p for _, _, p, _ in rows]
    if maps is not None:
        if len(maps) != len(found.records):
            raise ValueError('%d maps for %d records' % (len(maps), len(found.records)))
        map_of = {id(record): patch_map for record, patch_map in zip(found.records, maps)}
        paired, paired_captions = [], []
        for (_, _, patches_row, records), row_captions in zip(rows, captions):
            # An overlay is RGB: a greyscale network's patches go beside it as grey RGB.
            patches_row = np.repeat(patches_row, 3 // patches_row.shape[-1], axis=-1)
            row = []
            for patch, record in zip(patches_row, records):
                row += [patch, pictures.overlay(patch, map_of[id(record)])]
            side = patches_row.shape[1]
            paired.append(np.stack(row) if row else np.zeros((0, side, side, 3), np.float32))
            paired_captions.append([text for caption in row_captions for text in (caption, map_label)])
        tiles, captions = paired, paired_captions
    labels = ['%s\nfilter %d' % (layer, filter_id) for layer, filter_id, _, _ in rows]
    return plot_examples(synthetic_images, tiles, captions,
                         synthetic_captions=synthetic_captions, row_labels=labels, title=title)


def save_picture(path, picture, text=None):
    """A picture float32 [H, W, C] (C = 1 or 3), 0..255, saved as an 8-bit PNG at its own size, with `text`
    ({key: str}) in its text chunks; never half a file at `path`."""
    from PIL import Image, PngImagePlugin
    pixels = np.clip(np.round(np.asarray(picture, np.float64)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[-1] == 1 else pixels)
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    files.check_output(path)
    return files.write_atomic(path, lambda f: image.save(f, format='PNG', pnginfo=info))


# ---------------------------------------------------------------------------
# Attribution maps (analysis/attribution): a map drawn over its image

def show_attribution(ax, image, attribution_map, alpha=0.55, percentile=99.5):
    """Draw one map [H, W] over its image [H, W, C] (0..255, drawn grey) on an Axes; returns the heat map's
    AxesImage (for a colour bar).

    Colours as pictures.heat_scale: a map with negative values (Integrated
    Gradients) in a diverging map centred on 0, red positive, blue negative;
    else from 0 (dark) up; the colours end at the `percentile` of |map|.
    """
    attribution_map = np.asarray(attribution_map, np.float32)
    ax.imshow(pictures.grey(image), cmap='gray', vmin=0, vmax=1, interpolation='nearest')
    name, low, high = pictures.heat_scale(attribution_map, percentile)
    heat = ax.imshow(attribution_map, cmap=name, vmin=low, vmax=high, alpha=alpha, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    return heat


def plot_attribution(image, maps, labels, title=None, size=3.0):
    """A Figure of one image: the image, then each map over it with its colour bar.

    image: [H, W, C], 0..255 (C = 1 or 3); maps: float32 [M, H, W]; labels:
    one string per map (the method, and the unit for the CAM methods);
    title: above the row (the objective and the network).
    """
    maps = np.asarray(maps, np.float32)
    if len(labels) != len(maps):
        raise ValueError('%d labels for %d maps' % (len(labels), len(maps)))
    fig = Figure(figsize=(size * 1.25 * (len(maps) + 1), size + (0.8 if title else 0.3)), layout='constrained')
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    pictures.show(axes[0], image, scale=False)
    axes[0].set_xticks([])
    axes[0].set_yticks([])
    axes[0].set_xlabel('image', fontsize=8)
    for ax, attribution_map, label in zip(axes[1:], maps, labels):
        fig.colorbar(show_attribution(ax, image, attribution_map), ax=ax, fraction=0.046, pad=0.02)
        ax.set_xlabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def plot_attribution_sheet(images, maps, methods, image_labels=None, title=None, by='image', tile=1.8):
    """A contact sheet: every map over its image, each in colours up to its own 99.5th percentile of |map|.

    images: [N, H, W, C], 0..255; maps: float32 [N, M, H, W]; methods: M
    labels; image_labels: N labels. by: 'image', one row per image (the
    image, then its maps); 'method', one row per method with the images as
    columns (a first row shows the images).
    """
    images, maps = np.asarray(images), np.asarray(maps, np.float32)
    count, methods_count = maps.shape[:2]
    if len(images) != count or len(methods) != methods_count:
        raise ValueError('maps of shape %s for %d images and %d methods' % (maps.shape, len(images), len(methods)))
    if by not in ('image', 'method'):
        raise ValueError("by=%r: expected 'image' or 'method'" % (by,))
    image_labels = image_labels if image_labels is not None else [''] * count
    rows, columns = (count, methods_count + 1) if by == 'image' else (methods_count + 1, count)
    fig = Figure(figsize=(tile * columns + 0.6, tile * rows + (0.8 if title else 0.2)), layout='constrained')
    axes = fig.subplots(rows, columns, squeeze=False)
    for i in range(count):
        for j in range(methods_count + 1):
            ax = axes[i, j] if by == 'image' else axes[j, i]
            if j == 0:
                pictures.show(ax, images[i], scale=False)
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                show_attribution(ax, images[i], maps[i, j - 1])
            if by == 'image':
                if j == 0:
                    ax.set_ylabel(image_labels[i], fontsize=7)
                if i == 0:
                    ax.set_title('image' if j == 0 else methods[j - 1], fontsize=8)
            else:
                if i == 0:
                    ax.set_ylabel('image' if j == 0 else methods[j - 1], fontsize=8)
                if j == 0:
                    ax.set_title(image_labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
