"""
The atlas page: catalog.json (one object per filter with a finished view)
and index.html, the template page.html with the catalog written into its
data block; it opens straight from the file system.

    from filtervis.atlas import page
    catalog = page.write_index(out)      # after any run, or with `python atlas.py OUT --index-only`
"""

import json
import os

from filtervis.atlas.store import read_header, read_json, read_records
from filtervis.atlas.views import VIEW_TITLES, parse_view, unit_folder
from filtervis.util import files

CATALOG_FILE = 'catalog.json'
# {unit name: [class name per neuron]}, written by a run with --classes.
CLASSES_FILE = 'classes.json'
PAGE_FILE = 'index.html'
PAGE_DATA = '/*DATA*/'
# The page's markup, style and code; page_html() fills in its data block.
PAGE_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page.html')
# The detail view's patch / map toggle: its style and code, added before the page's end only when an entry has
# maps (--attribution), so that the page of an atlas without them is what it was before there were any.
MAPS_TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'page-maps.html')
PAGE_END = '</body>'


def examples_file(folder, feature_id):
    """The examples record of a filter, relative to OUT: UNIT/NNNN-examples.json."""
    return '%s/%04d-examples.json' % (folder, feature_id)


def build_catalog(out):
    """One entry per filter with a finished view, by unit (network order) then filter; a view in two records
    (runs that raced) once.

    An entry holds layer, layer_index, filter, and `views`: one object per
    finished view, in page order, each {view, pictures: [picture, ...]} (one
    picture, or N for diversityN, with `diversity`, the group's measure), a
    picture being {png, thumb, curve, npz, activation, dead_fraction,
    blur_robustness, no_gradient, dead, objective}. The first view's first
    picture is the filter's tile: its fields are also the entry's own, with
    `view` naming it. With --examples, an entry also holds `examples`:
    [{png, file, activation}], strongest first; with --attribution too, each
    example also holds `map` (its map tile) and the entry `attribution` (the method). With --classes (CLASSES_FILE),
    a class's entry holds its `name`, and `top1_name` for the class seen.
    """
    views = {}
    classes_path = os.path.join(out, CLASSES_FILE)
    classes = read_json(classes_path) if os.path.isfile(classes_path) else {}
    for record in read_records(out):
        for entry in record['entries']:
            views.setdefault((entry['layer_index'], entry['filter']), {}).setdefault(record['view'], entry)
    catalog = []
    for key in sorted(views):
        found = [views[key][name] for name in sorted(views[key], key=lambda name: parse_view(name).order)]
        first = found[0]
        entry = {'layer': first['layer'], 'layer_index': first['layer_index'], 'filter': first['filter'],
                 'view': first['view']}
        entry.update(first['pictures'][0])
        entry['views'] = [{k: v for k, v in view.items() if k not in ('layer', 'layer_index', 'filter')}
                          for view in found]
        names = classes.get(entry['layer'])
        if names and entry['filter'] < len(names):
            entry['name'] = names[entry['filter']]
        if names and entry.get('top1') is not None and entry['top1'] < len(names):
            entry['top1_name'] = names[entry['top1']]
        path = os.path.join(out, examples_file(unit_folder(entry['layer_index'], entry['layer']), entry['filter']))
        if os.path.isfile(path):
            found = read_json(path)
            entry['examples'] = found['examples']
            if 'attribution' in found:
                entry['attribution'] = found['attribution']
        catalog.append(entry)
    return catalog


def write_index(out):
    """Write OUT/catalog.json and OUT/index.html from the finished views; returns the catalog (list)."""
    header = read_header(out)
    catalog = build_catalog(out)
    data = json.dumps(catalog, indent=0).encode('utf8')
    files.write_atomic(os.path.join(out, CATALOG_FILE), lambda f: f.write(data))
    page = page_html(header, catalog).encode('utf8')
    files.write_atomic(os.path.join(out, PAGE_FILE), lambda f: f.write(page))
    return catalog


def view_text(view, settings):
    """{'title': what a view's pictures show, 'flags': the visualize.py flags that render them} (text)."""
    parsed = parse_view(view)
    if parsed.diversity is None:
        return {'title': VIEW_TITLES[view], 'flags': '' if view == 'channel' else '--objective %s' % view}
    weight = settings['diversity_weight']
    return {'title': '%d pictures of the channel pushed apart (weight %g)' % (parsed.diversity, weight),
            'flags': '--diversity %d --diversity-weight %g' % (parsed.diversity, weight)}


def page_html(header, catalog):
    """index.html: page.html with the header, the catalog and the views' texts in its JSON script block.

    Pages opened from file:// may not fetch() local files, so the data travels
    inside the page. Every text from files reaches the page through
    textContent, never as markup; in the script block, < > & are escaped so
    that no text can close it. When an entry has attribution maps, the
    detail view's patch / map toggle (page-maps.html) goes in before </body>.
    """
    names = set(header['settings']['views']) | {view['view'] for entry in catalog for view in entry['views']}
    views = {name: view_text(name, header['settings']) for name in sorted(names, key=lambda n: parse_view(n).order)}
    data = json.dumps({'atlas': header, 'catalog': catalog, 'views': views}, separators=(',', ':'))
    data = data.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
    with open(PAGE_TEMPLATE, encoding='utf8') as f:
        template = f.read()
    if any('attribution' in entry for entry in catalog):
        with open(MAPS_TEMPLATE, encoding='utf8') as f:
            maps = f.read()
        end = template.rindex(PAGE_END)
        template = template[:end] + maps + template[end:]
    return template.replace(PAGE_DATA, data, 1)
