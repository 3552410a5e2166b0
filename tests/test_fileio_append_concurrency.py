"""fileio.append_line under concurrency and after a torn write: no line is ever lost or glued to another."""

import subprocess
import sys

from stylegan_rlo.fileio import append_line

_WRITER = """
import sys
from stylegan_rlo.fileio import append_line
for i in range(int(sys.argv[3])):
    append_line(sys.argv[1], '{"writer": "%s", "i": %d}' % (sys.argv[2], i))
"""


def test_two_processes_appending_keep_every_line(tmp_path):
    path = tmp_path / "metric-fid50k_full.jsonl"
    n = 200
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), name, str(n)]) for name in ("a", "b")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    lines = path.read_text().splitlines()
    expected = {f'{{"writer": "{w}", "i": {i}}}' for w in "ab" for i in range(n)}
    assert len(lines) == 2 * n and set(lines) == expected


def test_append_after_a_torn_last_line_starts_a_new_line(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text('{"complete": 1}\n{"torn": ')  # a writer killed mid-line
    append_line(path, '{"next": 2}')
    assert path.read_text() == '{"complete": 1}\n{"torn": \n{"next": 2}\n'
