"""The atlas page in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

The atlas is made from small weights saved as an h5 file named like markup,
in a folder named like markup, with four views of each filter: the page must
show the file's name as text, never the folder, and run nothing; a filter's
detail view shows each view's pictures (N for diversityN) with their measures
and curves, and says which views are not rendered yet. The same catalog with its units renamed
to any text (markup, '/', spaces) and listed out of network order shows
those names as text, in network order, and opens each filter from its address.
Skips, naming the reason, when the browser, its driver or selenium is missing.
"""
import functools
import http.server
import json
import os
import shutil
import threading
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from builders import random_weights
from test_vgg16 import write_keras1_h5
from filtervis import atlas
from filtervis.cli import atlas as atlas_cli

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
CHROMEDRIVER = shutil.which('chromedriver') or '/usr/bin/chromedriver'
# File names are text too: these would run as markup. The folder's name must not reach the page at all.
NASTY = '<img src=x onerror=alert(1)>.h5'
NASTY_FOLDER = '<script>alert(1)<'
NASTY_IMAGE = '<img src=x onerror=alert(2)>.png'
VIEWS = ['channel', 'negative', 'neuron', 'diversity2']
# Units renamed for the page: any text, in network order the second first.
ODD_NAMES = {'conv1_1': ('<img src=x onerror=alert(3)>', 4), 'conv3_1': ('block 3/conv:1 - a', 0)}


def browser_missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install selenium)'
    for path, package in ((CHROMIUM, 'chromium'), (CHROMEDRIVER, 'chromium-driver')):
        if not os.access(path, os.X_OK):
            return '%s not found: install the Debian package %s (.ci/run does)' % (path, package)
    return None


# Every test here needs a real browser: slow (python -m pytest --runslow), and skipped without one.
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(browser_missing() is not None, reason=browser_missing() or '')]


@pytest.fixture(scope='module')
def page(tmp_path_factory):
    """(atlas folder, catalog) of conv1_1 and conv3_1, made from weights NASTY in the folder NASTY_FOLDER, with
    examples from three noise images, one named NASTY_IMAGE."""
    root = tmp_path_factory.mktemp('page')
    weights = root / NASTY_FOLDER / NASTY
    weights.parent.mkdir()
    write_keras1_h5(str(weights), random_weights())
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for name in ('a.png', 'b.png', NASTY_IMAGE):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(str(images / name))
    out = str(root / 'atlas')
    saved = os.environ.get('VGG16_DIR')
    (root / 'models').mkdir()
    os.environ['VGG16_DIR'] = str(root / 'models')
    try:
        assert atlas_cli.main([out, '--weights', str(weights), '--preprocess', 'unit', '--layers', 'conv1_1,conv3_1',
                           '--method', 'blog', '--iters', '20', '--size', '32', '--batch-size', '3', '--quiet',
                           '--views', ','.join(VIEWS), '--examples', str(images)]) == 0
    finally:
        if saved is None:
            del os.environ['VGG16_DIR']
        else:
            os.environ['VGG16_DIR'] = saved
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        return out, json.load(f)


@pytest.fixture(scope='module')
def odd_page(page):
    """(page path, catalog) of the same atlas with its units renamed by ODD_NAMES, as OUT/odd.html."""
    out, catalog = page
    renamed = [dict(entry, layer=ODD_NAMES[entry['layer']][0], layer_index=ODD_NAMES[entry['layer']][1])
               for entry in catalog]
    path = os.path.join(out, 'odd.html')
    with open(path, 'w', encoding='utf8') as f:
        f.write(atlas.page_html(atlas.read_header(out), renamed))
    return path, renamed


@pytest.fixture(scope='module')
def driver(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage',
                 '--user-data-dir=%s' % tmp_path_factory.mktemp('chromium-profile'), '--window-size=1280,900'):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


def console_errors(driver):
    return [entry for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']


def tile_ids(driver, layer):
    """The filter ids of one layer's tiles, in page order."""
    return driver.execute_script(
        "const section = [...document.querySelectorAll('section')]"
        "  .find((s) => s.querySelector('h2').textContent === arguments[0]);"
        "return [...section.querySelectorAll('.tile')]"
        "  .map((t) => Number(t.querySelector('.id').textContent.slice(1)));", layer)


def loaded_width(driver, element_id, element=None):
    """naturalWidth of an img (by id, or the element) once it has loaded; 0 when it failed."""
    from selenium.webdriver.support.ui import WebDriverWait
    script = ("const i = arguments[1] || document.getElementById(arguments[0]);"
              "return i.complete ? i.naturalWidth : null;")
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(script, element_id, element) is not None)
    return driver.execute_script(script, element_id, element)


def precise(driver, value):
    """A number as the page shows it (3 significant digits, JavaScript's toPrecision)."""
    return driver.execute_script('return Number(arguments[0]).toPrecision(3)', value)


def detail_views(driver):
    """{view: [(picture src, its measures' text, picture element, curve element)]} of the open detail view."""
    from selenium.webdriver.common.by import By
    found = {}
    for block in driver.find_elements(By.CSS_SELECTOR, '#detail-views .view'):
        found[block.get_attribute('data-view')] = [
            (figure.find_element(By.CSS_SELECTOR, 'img.full').get_attribute('src'),
             figure.find_element(By.CSS_SELECTOR, 'table').text,
             figure.find_element(By.CSS_SELECTOR, 'img.full'), figure.find_element(By.CSS_SELECTOR, 'img.curve'))
            for figure in block.find_elements(By.CSS_SELECTOR, '.picture')]
    return found


def test_tiles_sort_detail_and_no_errors_from_file_url(page, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    out, catalog = page
    driver.get('file://' + os.path.join(out, atlas.PAGE_FILE))
    assert len(driver.find_elements(By.CSS_SELECTOR, '.tile')) == len(catalog) == 12
    assert tile_ids(driver, 'conv3_1') == list(range(8))
    assert 'views: ' + ', '.join(VIEWS) in driver.find_element(By.ID, 'settings').text

    # Sorting by dead fraction puts the most dead first, ties by filter id; the catalog says that is a new order.
    layer = [e for e in catalog if e['layer'] == 'conv3_1']
    expected = [e['filter'] for e in sorted(layer, key=lambda e: (-e['dead_fraction'], e['filter']))]
    assert expected != list(range(8))
    Select(driver.find_element(By.ID, 'sort')).select_by_value('dead_fraction')
    assert tile_ids(driver, 'conv3_1') == expected

    driver.find_element(By.ID, 'dead-only').click()
    shown = [t for t in driver.find_elements(By.CSS_SELECTOR, '.tile') if t.is_displayed()]
    assert len(shown) == sum(e['dead'] for e in catalog) > 0
    driver.find_element(By.ID, 'dead-only').click()

    entry = layer[5]
    tile = driver.find_elements(By.CSS_SELECTOR, 'section')[1].find_elements(By.CSS_SELECTOR, '.tile')[
        expected.index(entry['filter'])]
    tile.click()
    detail = driver.find_element(By.ID, 'detail')
    assert detail.is_displayed()
    assert driver.find_element(By.ID, 'detail-title').text.startswith('conv3_1 · filter 5')
    # The detail view covers the header: it names the network and the method itself.
    network = driver.find_element(By.ID, 'detail-network').text
    assert network.startswith(atlas.read_header(out)['description']) and 'blog method · 20 steps' in network
    # One picture per view, two for diversity2, each with its own measures, its picture and its curve loaded.
    views = detail_views(driver)
    assert list(views) == VIEWS and [len(views[v]) for v in VIEWS] == [1, 1, 1, 2]
    for view in entry['views']:
        for (src, measures, image, curve), picture in zip(views[view['view']], view['pictures']):
            assert src.endswith(picture['png'])
            assert precise(driver, picture['activation']) in measures and 'blur robustness' in measures
            assert loaded_width(driver, None, image) == 32 and loaded_width(driver, None, curve) > 0
    assert views['channel'][0][0].endswith('conv3_1/0005.png')
    assert views['diversity2'][1][0].endswith('conv3_1/0005-diversity2-1.png')
    diversity = entry['views'][3]['diversity']
    assert 'group diversity ' + precise(driver, diversity) in driver.find_element(By.CSS_SELECTOR, '[data-view=diversity2] h3').text
    # One command per view, each with the view's flags.
    commands = driver.find_element(By.ID, 'detail-command').text.splitlines()
    assert len(commands) == 4 and all(c.startswith('python visualize.py --weights ') for c in commands)
    assert '--layer conv3_1 --filters 5 --out conv3_1-5.png ' in commands[0]
    assert ' --objective negative --layer conv3_1 --filters 5 --out conv3_1-5-negative.png ' in commands[1]
    assert ' --diversity 2 --diversity-weight 1 --layer conv3_1 ' in commands[3]
    # Real-image examples: at most one per image, strongest first, each shown.
    shown = driver.find_elements(By.CSS_SELECTOR, '#detail-examples img')
    assert len(shown) == len(entry['examples']) and 1 <= len(shown) <= 3
    assert [a['activation'] for a in entry['examples']] == sorted((a['activation'] for a in entry['examples']),
                                                                  reverse=True)
    assert all(loaded_width(driver, None, image) > 0 for image in shown)
    driver.find_element(By.ID, 'detail-close').click()
    assert not detail.is_displayed()
    assert console_errors(driver) == []


def test_views_not_rendered_yet_are_named_and_a_tile_shows_the_first_view(page, driver):
    from selenium.webdriver.common.by import By
    out, catalog = page
    # As while a run or a shard is under way: filter 2 of conv1_1 has only its neuron and diversity2 views.
    partial = [dict(e, views=e['views'][2:], view='neuron', **e['views'][2]['pictures'][0])
               if (e['layer'], e['filter']) == ('conv1_1', 2) else e for e in catalog]
    path = os.path.join(out, 'partial.html')
    with open(path, 'w', encoding='utf8') as f:
        f.write(atlas.page_html(atlas.read_header(out), partial))
    driver.get('file://%s#conv1_1-2' % path)
    views = detail_views(driver)
    assert list(views) == VIEWS and [len(views[v]) for v in VIEWS] == [0, 0, 1, 2]
    for view in ('channel', 'negative'):
        assert 'not rendered yet' in driver.find_element(By.CSS_SELECTOR, '[data-view=%s]' % view).text
    assert len(driver.find_element(By.ID, 'detail-command').text.splitlines()) == 2
    driver.find_element(By.ID, 'detail-close').click()
    tile = driver.find_elements(By.CSS_SELECTOR, 'section')[0].find_elements(By.CSS_SELECTOR, '.tile')[2]
    assert tile.find_element(By.TAG_NAME, 'img').get_attribute('src').endswith('conv1_1/0002-neuron-thumb.jpg')
    assert '#2 neuron' in tile.text
    assert console_errors(driver) == []


def test_names_from_files_are_shown_not_run(page, driver):
    from selenium.webdriver.common.by import By
    out, _ = page
    driver.get('file://' + os.path.join(out, atlas.PAGE_FILE))
    settings = driver.find_element(By.ID, 'settings').text
    assert 'weights: ' + NASTY in settings and 'preprocess unit' in settings
    assert atlas.read_header(out)['weights_md5'] in settings
    # The weights' file name and md5, never the folder they sat in on the machine that made the atlas.
    assert NASTY_FOLDER not in driver.find_element(By.TAG_NAME, 'body').text
    assert NASTY in driver.find_element(By.ID, 'description').text
    _, catalog = page
    with_nasty = next(e for e in catalog if any(x['file'] == NASTY_IMAGE for x in e.get('examples', [])))
    driver.get('file://%s#%s-%d' % (os.path.join(out, atlas.PAGE_FILE), with_nasty['layer'], with_nasty['filter']))
    assert NASTY_IMAGE in driver.find_element(By.ID, 'detail-examples').text
    # Had the name become markup, there would be a third script element and an alert open.
    assert len(driver.find_elements(By.TAG_NAME, 'script')) == 2
    assert driver.execute_script('return 1') == 1      # raises UnexpectedAlertPresentException after an alert
    assert console_errors(driver) == []


def test_page_works_from_a_static_web_server(page, driver):
    from selenium.webdriver.common.by import By
    out, catalog = page
    handler = functools.partial(QuietHandler, directory=out)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        entry = catalog[2]
        driver.get('http://127.0.0.1:%d/index.html#%s-%d' % (server.server_port, entry['layer'], entry['filter']))
        assert len(driver.find_elements(By.CSS_SELECTOR, '.tile')) == len(catalog)
        assert driver.find_element(By.ID, 'detail-title').text.startswith('conv1_1 · filter 2')
        assert all(loaded_width(driver, None, image) == 32 for view in detail_views(driver).values()
                   for _, _, image, _ in view)
        assert console_errors(driver) == []
    finally:
        server.shutdown()
        server.server_close()


def test_units_named_any_text_are_shown_as_text_in_network_order(odd_page, driver):
    from selenium.webdriver.common.by import By
    path, catalog = odd_page
    markup, slashed = ODD_NAMES['conv1_1'][0], ODD_NAMES['conv3_1'][0]
    driver.get('file://' + path)
    assert [h.text for h in driver.find_elements(By.CSS_SELECTOR, 'section h2')] == [slashed, markup]
    assert [a.text.split(' (')[0] for a in driver.find_elements(By.CSS_SELECTOR, '#layer-links a')] == [
        slashed, markup]
    assert tile_ids(driver, slashed) == list(range(8)) and tile_ids(driver, markup) == list(range(4))
    # No name became markup: no extra element, no alert.
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert len(driver.find_elements(By.TAG_NAME, 'script')) == 2
    assert driver.execute_script('return 1') == 1

    # A click puts the filter's address in the URL; the address opens the same filter.
    driver.find_elements(By.CSS_SELECTOR, 'section')[0].find_elements(By.CSS_SELECTOR, '.tile')[3].click()
    assert driver.find_element(By.ID, 'detail-title').text.startswith(slashed + ' · filter 3')
    address = driver.execute_script('return location.hash')
    assert address == '#' + urllib.parse.quote(slashed, safe='') + '-3'
    driver.get('file://%s#%s-%d' % (path, urllib.parse.quote(markup, safe=''), 2))
    assert driver.find_element(By.ID, 'detail-title').text.startswith(markup + ' · filter 2')
    command = driver.find_element(By.ID, 'detail-command').text
    assert " --layer '%s' --filters 2 " % markup in command
    channel = detail_views(driver)['channel'][0]
    assert channel[0].endswith('conv1_1/0002.png') and loaded_width(driver, None, channel[2]) == 32
    # A malformed address opens nothing and breaks nothing.
    driver.get('file://%s#%%E0%%A4%%A-1' % path)
    assert not driver.find_element(By.ID, 'detail').is_displayed()
    assert console_errors(driver) == []


@pytest.fixture(scope='module')
def map_page(model_file, tmp_path_factory):
    """(atlas folder, catalog) of conv2_1 filters 0-3 with examples from four noise images and their Grad-CAM maps."""
    root = tmp_path_factory.mktemp('maps')
    images = root / 'images'
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(str(images / ('n%d.png' % i)))
    out = str(root / 'atlas')
    assert atlas_cli.main([out, '--model', model_file, '--layers', 'conv2_1', '--filters', '0-3', '--method', 'blog',
                           '--iters', '3', '--size', '32', '--quiet', '--examples', str(images),
                           '--attribution', 'gradcam']) == 0
    with open(os.path.join(out, atlas.CATALOG_FILE)) as f:
        return out, json.load(f)


def example_sources(driver):
    return driver.execute_script("return [...document.querySelectorAll('#detail-examples img')]"
                                 ".map((image) => image.getAttribute('src'));")


def test_the_toggle_swaps_the_example_tiles_for_their_maps(map_page, page, driver):
    from selenium.webdriver.common.by import By
    out, catalog = map_page
    first, second = [entry for entry in catalog if entry['examples']][:2]
    driver.get('file://%s#%s-%d' % (os.path.join(out, atlas.PAGE_FILE), first['layer'], first['filter']))
    toggle = driver.find_element(By.ID, 'example-toggle')
    assert toggle.is_displayed() and 'map (gradcam)' in toggle.text and 'patch' in toggle.text
    patches = [example['png'] for example in first['examples']]
    assert example_sources(driver) == patches and len(patches) >= 2
    driver.find_element(By.ID, 'example-map').click()
    assert example_sources(driver) == [example['map'] for example in first['examples']]
    shown = driver.find_elements(By.CSS_SELECTOR, '#detail-examples img')
    assert all(loaded_width(driver, None, image) > 0 for image in shown)
    assert shown[0].get_attribute('alt') == first['examples'][0]['file'] + ' · gradcam map'
    # The choice stays while another filter opens.
    driver.get('file://%s#%s-%d' % (os.path.join(out, atlas.PAGE_FILE), second['layer'], second['filter']))
    assert example_sources(driver) == [example['map'] for example in second['examples']]
    driver.find_element(By.ID, 'example-patch').click()
    assert example_sources(driver) == [example['png'] for example in second['examples']]
    assert console_errors(driver) == []
    # An atlas without maps has no toggle, nor its code.
    out, catalog = page
    entry = next(entry for entry in catalog if entry.get('examples'))
    driver.get('file://%s#%s-%d' % (os.path.join(out, atlas.PAGE_FILE), entry['layer'], entry['filter']))
    assert driver.find_elements(By.ID, 'example-toggle') == []
    assert example_sources(driver) == [example['png'] for example in entry['examples']]
    assert console_errors(driver) == []


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
