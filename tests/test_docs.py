"""The docs say only what is there: README.md and docs/*.md.

- every relative link and image points to a file that exists (and a
  #fragment into a page, to one of its headings);
- every --flag of a documented command (`python visualize.py ...`,
  `python examples.py ...`, `python atlas.py ...`, `python download.py ...`,
  `filtervis-visualize|examples|atlas|download ...`,
  `python benchmarks/NAME.py ...`) is in that command's --help;
- every page of docs/ is linked from the README, every picture of docs/ is
  shown by a page, and the README stays a front door: under 250 lines.

The four command lines' help comes from their parsers, in this process; a
benchmark's from `python benchmarks/NAME.py --help`, run once per script, all
at once (each imports TensorFlow, which is most of this file's time).

    python -m pytest tests/test_docs.py
"""
import functools
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, 'README.md')
PAGES = sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
DOCS = [README] + PAGES
README_MAX_LINES = 250

# A command as the docs write it: group 'script', 'console' or 'bench' names it, 'rest' is what follows.
COMMAND = re.compile(r'(?<![\w./-])(?:python3?\s+(?P<script>visualize|examples|atlas|download)\.py'
                     r'|filtervis-(?P<console>visualize|examples|atlas|download)'
                     r'|python3?\s+benchmarks/(?P<bench>\w+)\.py)(?![\w.-])(?P<rest>.*)')
# A shell comment runs to the end of the line; these end one command and may start the next.
COMMENT = re.compile(r'(?:^|\s)#.*')
SEPARATOR = re.compile(r'&&|\|\||[|;]')
FLAG = re.compile(r'(?<![\w-])--[A-Za-z][\w-]*')
FENCE = re.compile(r'^(```|~~~)')
MARKDOWN_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
HTML_LINK = re.compile(r'<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*"([^"]+)"', re.IGNORECASE)


def relative(path):
    return os.path.relpath(path, ROOT)


def read(path):
    with open(path, encoding='utf-8') as f:
        return f.read()


def split_code(text):
    """(code blocks, prose): fenced and indented code blocks as strings, and the rest with them blanked out."""
    blocks, prose, block = [], [], None
    in_fence, previous_blank, in_indented = False, True, False
    for line in text.split('\n'):
        if in_fence:
            if FENCE.match(line.strip()):
                blocks.append('\n'.join(block))
                in_fence = False
            else:
                block.append(line)
            prose.append('')
            continue
        if FENCE.match(line.strip()):
            in_fence, block = True, []
            prose.append('')
            continue
        indented = line.startswith('    ') and line.strip() and (previous_blank or in_indented)
        if indented:
            if not in_indented:
                block = []
                in_indented = True
            block.append(line)
            prose.append('')
        else:
            if in_indented and line.strip():
                blocks.append('\n'.join(block))
                in_indented = False
            elif in_indented and not line.strip():
                block.append('')
            prose.append(line if not in_indented else '')
        previous_blank = not line.strip()
    if in_indented or in_fence:
        blocks.append('\n'.join(block))
    return blocks, '\n'.join(prose)


def inline_code(prose):
    """The inline code spans of prose; a span may run across the lines of one paragraph."""
    return [span.replace('\n', ' ') for span in re.findall(r'(?<!`)`([^`]+)`(?!`)', prose)]


def commands(text):
    """[(name, command as shown, its --flags)] of every command of the forms above in the code of a text."""
    blocks, prose = split_code(text)
    pieces = [re.sub(r'\\\n\s*', ' ', block) for block in blocks] + inline_code(prose)
    found = []
    for piece in pieces:
        for line in piece.split('\n'):
            for segment in SEPARATOR.split(COMMENT.sub('', line)):
                match = COMMAND.search(segment)
                if match:
                    name = ('python benchmarks/%s.py' % match.group('bench') if match.group('bench')
                            else 'python %s.py' % (match.group('script') or match.group('console')))
                    found.append((name, match.group(0).strip(), FLAG.findall(match.group('rest'))))
    return found


def links(text):
    """Every link and image target in the prose (not the code) of a markdown text."""
    _, prose = split_code(text)
    prose = re.sub(r'(?<!`)`[^`]+`(?!`)', '', prose)
    return MARKDOWN_LINK.findall(prose) + HTML_LINK.findall(prose)


def is_external(target):
    return re.match(r'^[a-z][a-z0-9+.-]*:', target, re.IGNORECASE) is not None


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'<[^>]+>', '', heading).strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def anchors(path):
    _, prose = split_code(read(path))
    seen, result = {}, set()
    for heading in re.findall(r'^#{1,6}\s+(.+?)\s*#*\s*$', prose, re.MULTILINE):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else '%s-%d' % (base, count))
    return result


# -- help texts

CLI_PARSERS = {
    'python visualize.py': ('filtervis.cli.visualize', 'build_parser'),
    'python examples.py': ('filtervis.cli.examples', 'build_parser'),
    'python atlas.py': ('filtervis.cli.atlas', 'build_parser'),
    'python download.py': ('filtervis.cli.download', '_build_parser'),
}


@functools.lru_cache(maxsize=None)
def cli_help(name):
    import importlib
    module, function = CLI_PARSERS[name]
    return getattr(importlib.import_module(module), function)().format_help()


def documented_benchmarks():
    return sorted({name for doc in DOCS for name, _, _ in commands(read(doc)) if name.startswith('python benchmarks/')})


@functools.lru_cache(maxsize=None)
def benchmark_helps():
    """{'python benchmarks/NAME.py': its --help, or the error that kept it from printing}, all started at once."""
    running = {}
    for name in documented_benchmarks():
        script = os.path.join(ROOT, name.split()[1])
        if not os.path.isfile(script):
            continue
        running[name] = subprocess.Popen([sys.executable, script, '--help'], cwd=ROOT, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    helps = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=300)
        helps[name] = out if process.returncode == 0 else 'exit %d: %s' % (process.returncode, err[-2000:])
    return helps


def help_of(name):
    if name in CLI_PARSERS:
        return cli_help(name)
    return benchmark_helps().get(name)


# -- the tests

@pytest.mark.parametrize('doc', DOCS, ids=relative)
def test_every_relative_link_and_image_exists(doc):
    problems = []
    for target in links(read(doc)):
        if is_external(target) or target.startswith('#'):
            continue
        path, _, fragment = target.partition('#')
        full = os.path.normpath(os.path.join(os.path.dirname(doc), path))
        if not os.path.exists(full):
            problems.append('%s: link to %s, which does not exist' % (relative(doc), target))
        elif fragment and full.endswith('.md') and fragment not in anchors(full):
            problems.append('%s: link to %s, but %s has no heading #%s' % (relative(doc), target,
                                                                            relative(full), fragment))
    assert not problems, '\n'.join(problems)


def flag_problems(doc, benchmarks):
    """What is wrong with the flags of the doc's commands: the command lines' (benchmarks False) or the
    benchmarks' (True), whose --help costs a TensorFlow import each."""
    problems = []
    for name, shown, flags in commands(read(doc)):
        if name.startswith('python benchmarks/') != benchmarks:
            continue
        text = help_of(name)
        if text is None:
            problems.append('%s: `%s`: %s does not exist' % (relative(doc), shown, name.split()[1]))
            continue
        if text.startswith('exit '):
            problems.append('%s: `%s`: `%s --help` failed: %s' % (relative(doc), shown, name, text))
            continue
        known = set(FLAG.findall(text))
        for flag in flags:
            flag = flag.split('=')[0]
            if flag not in known:
                problems.append('%s: `%s`: %s is not a flag of %s (see `%s --help`)'
                                % (relative(doc), shown, flag, name, name))
    return problems


@pytest.mark.parametrize('doc', DOCS, ids=relative)
def test_every_flag_of_a_documented_command_is_in_its_help(doc):
    problems = flag_problems(doc, benchmarks=False)
    assert not problems, '\n'.join(problems)


@pytest.mark.slow
def test_every_flag_of_a_documented_benchmark_is_in_its_help():
    problems = [line for doc in DOCS for line in flag_problems(doc, benchmarks=True)]
    assert not problems, '\n'.join(problems)


def test_the_commands_of_the_docs_are_found():
    # A guard for the parser above: the docs show each command line and benchmarks, with flags.
    names = {name for doc in DOCS for name, _, flags in commands(read(doc)) if flags}
    assert set(CLI_PARSERS) <= names, sorted(names)
    assert any(name.startswith('python benchmarks/') for name in names), sorted(names)


def test_the_checker_finds_a_bogus_flag_a_broken_link_and_a_continued_line():
    text = ('See [a page](docs/no-such-page.md) and ![a picture](docs/demo-conv3_2.png).\n\n'
            '    python visualize.py --layer conv3_2 \\\n        --no-such-flag 3   # --ignored\n\n'
            'Inline: `filtervis-atlas OUT --views channel && python download.py --check`.\n')
    assert links(text) == ['docs/no-such-page.md', 'docs/demo-conv3_2.png']
    found = [(name, flags) for name, _, flags in commands(text)]
    assert found == [('python visualize.py', ['--layer', '--no-such-flag']),
                     ('python atlas.py', ['--views']), ('python download.py', ['--check'])]
    assert '--no-such-flag' not in cli_help('python visualize.py')


def test_every_docs_page_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, target.partition('#')[0]))
              for target in links(read(README)) if not is_external(target)}
    missing = [relative(page) for page in PAGES if page not in linked]
    assert not missing, 'README.md links to no %s' % ', '.join(missing)


def test_the_readme_is_a_front_door():
    with open(README, encoding='utf-8') as f:
        count = sum(1 for _ in f)
    assert count < README_MAX_LINES, ('README.md has %d lines; keep it under %d and move detail to a page of docs/'
                                      % (count, README_MAX_LINES))


def test_every_picture_in_docs_is_shown_by_a_page():
    shown = {os.path.normpath(os.path.join(os.path.dirname(doc), target.partition('#')[0]))
             for doc in DOCS for target in links(read(doc)) if not is_external(target)}
    unused = [relative(path) for path in sorted(glob.glob(os.path.join(ROOT, 'docs', '*.png'))) if path not in shown]
    assert not unused, ('no page shows %s: show it with the command that made it, or delete it'
                        % ', '.join(unused))
