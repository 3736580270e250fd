#!/usr/bin/env python3
"""Which shown suggestions were taken, against the model's confidence in them (docs/benchmarks.md,
"Which suggestions are worth showing").

Input: runs of `amd-lsp bench replay --accept --set minConfidence=0.000001 --json DIR/sN.json`
(the gate records the chosen tokens' probabilities but hides nothing) made with
`AMD_LSP_BENCH_LOG=DIR/log-sN.txt AMD_LSP_LOG=amd_lsp::lsp::completion=trace`, whose trace lines
hold each completion's cleaned text and its `Confidence`. A shown suggestion is matched to the
completion whose text ends its line; a take to the completion whose text ends with what was on
screen. Then: for a gate rule, the share of shown suggestions it would have hidden and the takes
and characters hidden with them (taken as lost: the typist might have taken a later one).

Usage: study.py DIR
"""
import glob
import json
import re
import sys

LINE = re.compile(
    r'cleaned=(?:Some\()?"((?:[^"\\]|\\.)*)"\)? conf=Some\(Confidence \{ mean: ([\d.e-]+), '
    r'first: ([\d.e-]+), min: ([\d.e-]+), n: (\d+) \}\)'
)


def unescape(s):
    """A Rust `{:?}` string's text."""
    s = re.sub(r'\\u\{([0-9a-fA-F]+)\}', lambda m: '\\U%08x' % int(m.group(1), 16), s)
    return s.encode('utf-8').decode('unicode_escape').encode('latin1').decode('utf-8')


def rows(directory):
    out = []
    for path in sorted(glob.glob(directory + '/s*.json')):
        seed = path.rsplit('/', 1)[1][:-5]
        completions = []
        for line in open('%s/log-%s.txt' % (directory, seed)):
            m = LINE.search(line)
            if m and m.group(1):
                completions.append((unescape(m.group(1)),) + tuple(float(g) for g in m.groups()[1:]))
        typist = json.load(open(path))['runs'][0]['typist']
        taken = [dict(t, used=False) for t in typist['taken']]
        for shown in typist['shown_texts']:
            matches = [c for c in completions if shown.endswith(c[0])]
            if not matches:
                continue
            text, mean, first, least, n = max(matches, key=lambda c: len(c[0]))
            chars = 0
            for t in taken:
                if t['text'] and not t['used'] and text.endswith(t['text']):
                    t['used'], chars = True, t['chars']
                    break
            out.append(dict(seed=seed, mean=mean, first=first, min=least, len=len(text), chars=chars))
    return out


def main():
    data = rows(sys.argv[1])
    total = sum(r['chars'] for r in data)
    print('%d shown, %d taken, %d characters taken' % (len(data), sum(1 for r in data if r['chars']), total))
    rules = {'mean < %.2f' % t: (lambda r, t=t: r['mean'] < t) for t in (0.3, 0.35, 0.4, 0.45)}
    rules.update({'first < %.2f' % t: (lambda r, t=t: r['first'] < t) for t in (0.2, 0.3, 0.4)})
    rules.update({'min < %.2f' % t: (lambda r, t=t: r['min'] < t) for t in (0.09, 0.11, 0.13)})
    rules.update({'mean*(chars-1) < %g' % x: (lambda r, x=x: r['mean'] * (r['len'] - 1) < x) for x in (1, 2, 2.5, 3)})
    rules.update({'mean < 0.35 or mean*(chars-1) < %g' % x:
                  (lambda r, x=x: r['mean'] < 0.35 or r['mean'] * (r['len'] - 1) < x) for x in (1, 2, 3)})
    print('| hidden if | shown hidden | takes hidden | characters hidden |')
    print('|---|---|---|---|')
    for name, hide in rules.items():
        cut = [r for r in data if hide(r)]
        print('| %s | %d (%.0f%%) | %d | %d of %d |' % (name, len(cut), 100 * len(cut) / len(data),
              sum(1 for r in cut if r['chars']), sum(r['chars'] for r in cut), total))


if __name__ == '__main__':
    main()
