#!/usr/bin/env python3
"""Lists Rust functions whose body is longer than a limit (default 60 lines), longest first.

    python3 scripts/long-functions.py [LIMIT] [DIR...]      (default: 60 src)

Exits 1 when it lists any. A rough scanner (braces outside strings, chars and line comments),
good enough for this code base's style; nested functions are measured on their own too.
"""
import os
import re
import sys

FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)')
STRING = re.compile(r'"(\\.|[^"\\])*"')
CHAR = re.compile(r"'(\\.|[^'\\])'")


def code_of(line):
    """The line without string and char literals and without a trailing // comment."""
    return CHAR.sub("''", STRING.sub('""', line)).split('//')[0]


def body_length(lines, start):
    """Lines from the `fn` line to its closing brace; None for a declaration without a body."""
    depth, opened = 0, False
    for j in range(start, len(lines)):
        code = code_of(lines[j])
        if not opened and ';' in code and '{' not in code:
            return None
        for ch in code:
            if ch == '{':
                depth, opened = depth + 1, True
            elif ch == '}':
                depth -= 1
        if opened and depth == 0:
            return j - start + 1
    return None


def long_functions(roots, limit):
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in sorted(f for f in files if f.endswith('.rs')):
                path = os.path.join(folder, name)
                with open(path, encoding='utf-8') as f:
                    lines = f.read().split('\n')
                for i, line in enumerate(lines):
                    m = FN.match(line)
                    n = m and body_length(lines, i)
                    if n and n > limit:
                        yield n, f'{path}:{i + 1}', m.group(6)


def main(argv):
    limit = int(argv[0]) if argv else 60
    found = sorted(long_functions(argv[1:] or ['src'], limit), reverse=True)
    for n, where, name in found:
        print(f'{n:4d}  {where}  {name}')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
