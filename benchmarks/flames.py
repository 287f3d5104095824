"""py-spy's collapsed stacks (``py-spy record --format raw``) as flame graphs and tables.

One sampler per process gives both: the raw file is kept, and from it this module draws an
SVG flame graph (frames merged per function, a hover title with samples and percent) and
summarises the top self and cumulative functions, the top self lines and the share of
samples per component (the event loop, the MySQL driver, redis-py, the project's own
packages...). Used by benchmarks/profiles.py; also a command of its own:

    python -m benchmarks.flames RAW_FILE [--svg OUT.svg] [--title TEXT] [--top 25]
"""

from __future__ import annotations

import argparse
import html
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# (component, test on the frame's file), first match wins. py-spy shortens a file to its
# package part (site-packages/pymysql/connections.py -> pymysql/connections.py).
COMPONENTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("MySQL driver (aiomysql, pymysql)", ("aiomysql/", "pymysql/", "asyncmy/", "MySQLdb/")),
    ("SQLite driver (aiosqlite)", ("aiosqlite/", "sqlite3/")),
    ("redis-py", ("redis/",)),
    ("protobuf (Python part)", ("google/protobuf/",)),
    ("prometheus_client", ("prometheus_client/",)),
    ("logging", ("logging/",)),
    ("asyncio / uvloop machinery", ("asyncio/", "uvloop/", "selectors.py", "contextvars")),
    ("scrypt / hashing", ("hashlib.py", "hmac.py", "db_proxy/passwords.py")),
    ("imcluster common/", ("common/",)),
    ("imcluster db_proxy/", ("db_proxy/",)),
    ("imcluster msg_server/", ("msg_server/",)),
    ("imcluster route_server/", ("route_server/",)),
    ("imcluster login_server/", ("login_server/",)),
)


def parse_frame(frame: str) -> tuple[str, str, int]:
    """(function, file, line) of one py-spy frame ``name (file:line)``."""
    m = FRAME.match(frame)
    if m is None:
        return frame, "", 0
    return m["name"], m["file"], int(m["line"] or 0)


def function_of(frame: str) -> str:
    name, file, _ = parse_frame(frame)
    return f"{name} ({file})" if file else name


def component_of(file: str) -> str:
    for component, needles in COMPONENTS:
        if any(n in file for n in needles):
            return component
    return "other (stdlib, builtins, imctl...)"


@dataclass
class Profile:
    """Collapsed stacks: (frames root first, samples)."""

    stacks: list[tuple[tuple[str, ...], int]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> Profile:
        stacks = []
        for raw in path.read_text(errors="replace").splitlines():
            stack, _, count = raw.rpartition(" ")
            if stack and count.isdigit():
                stacks.append((tuple(stack.split(";")), int(count)))
        return cls(stacks)

    @property
    def samples(self) -> int:
        return sum(n for _, n in self.stacks)

    def self_functions(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for frames, n in self.stacks:
            c[function_of(frames[-1])] += n
        return c

    def self_lines(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for frames, n in self.stacks:
            c[frames[-1]] += n
        return c

    def cumulative_functions(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for frames, n in self.stacks:
            for fn in {function_of(f) for f in frames}:  # once per sample, recursion or not
                c[fn] += n
        return c

    def self_components(self) -> Counter[str]:
        c: Counter[str] = Counter()
        for frames, n in self.stacks:
            c[component_of(parse_frame(frames[-1])[1])] += n
        return c

    def inclusive_components(self) -> Counter[str]:
        """Samples with at least one frame of the component anywhere on the stack."""
        c: Counter[str] = Counter()
        for frames, n in self.stacks:
            for comp in {component_of(parse_frame(f)[1]) for f in frames}:
                c[comp] += n
        return c

    def matching(self, pattern: str) -> int:
        """Samples whose stack has a function matching the regular expression."""
        rx = re.compile(pattern)
        return sum(n for frames, n in self.stacks if any(rx.search(function_of(f)) for f in frames))


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:5.1f}%" if whole else "    -"


def table(title: str, counts: Counter[str], total: int, top: int) -> list[str]:
    lines = [title]
    for key, n in counts.most_common(top):
        lines.append(f"  {pct(n, total)} {n:7d}  {key}")
    return lines


def summary(profile: Profile, top: int = 25) -> str:
    total = profile.samples
    out = [f"samples: {total}"]
    out += table("by component, self (the leaf frame's file):", profile.self_components(), total, 20)
    out += table(
        "by component, inclusive (any frame of it on the stack):", profile.inclusive_components(), total, 20
    )
    out += table(f"top {top} functions, self:", profile.self_functions(), total, top)
    out += table(f"top {top} functions, cumulative:", profile.cumulative_functions(), total, top)
    out += table(f"top {top} lines, self:", profile.self_lines(), total, top)
    return "\n".join(out) + "\n"


# -- the SVG ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    total: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(stacks: Iterable[tuple[Sequence[str], int]]) -> Node:
    root = Node("all")
    for frames, n in stacks:
        node = root
        node.total += n
        for frame in frames:
            key = function_of(frame)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = Node(key)
            child.total += n
            node = child
    return root


PALETTE = {  # component -> hue range base (HSL), so that a layer's owner shows at a glance
    "MySQL driver (aiomysql, pymysql)": 200,
    "SQLite driver (aiosqlite)": 200,
    "redis-py": 0,
    "protobuf (Python part)": 280,
    "asyncio / uvloop machinery": 45,
    "logging": 120,
    "prometheus_client": 120,
    "scrypt / hashing": 330,
}


def color(name: str) -> str:
    m = re.search(r"\(([^()]*)\)$", name)
    file = m.group(1) if m else ""
    comp = component_of(file)
    jitter = zlib.crc32(name.encode()) % 20
    if comp in PALETTE:
        return f"hsl({PALETTE[comp] + jitter - 10},60%,{62 + jitter % 8}%)"
    if comp.startswith("imcluster"):
        return f"hsl({20 + jitter},85%,{58 + jitter % 10}%)"  # the project's own code: orange
    return f"hsl(0,0%,{72 + jitter % 12}%)"  # stdlib and the rest: grey


SCRIPT = """<script><![CDATA[
const W = %(width)d;
function label(t, w) {
  const full = t.getAttribute('data-t'), n = Math.floor((w - 6) / 7);
  t.textContent = n >= 3 ? (full.length <= n ? full : full.slice(0, n - 2) + '..') : '';
}
function place(e, x, w) {
  const q = e.querySelector('rect'), t = e.querySelector('text');
  q.setAttribute('x', x + 10);
  q.setAttribute('width', Math.max(w - 0.5, 0.1));
  t.setAttribute('x', x + 13);
  label(t, w);
}
function frames() { return document.querySelectorAll('g.f'); }
function dims(e) {
  const q = e.querySelector('rect');
  return [+q.getAttribute('data-x'), +q.getAttribute('data-w'), +q.getAttribute('y')];
}
function zoom(g) {
  const [x0, w0, y0] = dims(g), eps = 1e-9;
  for (const e of frames()) {
    const [x, w, y] = dims(e);
    if (y <= y0 && x >= x0 - eps && x + w <= x0 + w0 + eps) {  // the frame and what it calls
      e.style.display = ''; place(e, (x - x0) / w0 * W, w / w0 * W);
    } else if (y > y0 && x <= x0 + eps && x + w >= x0 + w0 - eps) {  // its callers
      e.style.display = ''; place(e, 0, W);
    } else { e.style.display = 'none'; }
  }
}
function reset() {
  for (const e of frames()) { const [x, w] = dims(e); e.style.display = ''; place(e, x * W, w * W); }
}
]]></script>"""


def svg(profile: Profile, title: str, width: int = 1400, min_fraction: float = 0.0005) -> str:
    """A flame graph (root at the bottom); click a frame to zoom, the title to reset."""
    root = tree(profile.stacks)
    total = max(root.total, 1)
    row = 17
    rects: list[tuple[float, float, int, Node]] = []  # (x fraction, width fraction, depth, node)

    def walk(node: Node, x: float, depth: int) -> None:
        for child in sorted(node.children.values(), key=lambda c: c.name):
            w = child.total / total
            if w >= min_fraction:
                rects.append((x, w, depth, child))
                walk(child, x, depth + 1)
            x += w

    rects.append((0.0, 1.0, 0, root))
    walk(root, 0.0, 1)
    depth = max((d for _, _, d, _ in rects), default=0) + 1
    height = depth * row + 70
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 20}" height="{height}" '
        f'font-family="monospace" font-size="12">',
        SCRIPT % {"width": width},
        f'<rect width="100%" height="100%" fill="#fafafa"/>'
        f'<text x="10" y="20" font-size="15" style="cursor:pointer" onclick="reset()">'
        f"{html.escape(title)}</text>"
        f'<text x="10" y="38" fill="#555">{total} samples (idle excluded). Orange: imcluster; blue: MySQL '
        "driver; red: redis-py; yellow: asyncio/uvloop; purple: protobuf; grey: stdlib. Hover for figures, "
        "click to zoom, click the title to reset.</text>",
    ]
    for x, w, d, node in rects:
        y = height - 12 - (d + 1) * row
        label = node.name if node is not root else "all"
        tip = f"{label}: {node.total} samples, {100 * node.total / total:.2f}%"
        px, pw = x * width, w * width
        n = int((pw - 6) // 7)
        text = label if len(label) <= n else (label[: n - 2] + ".." if n >= 3 else "")
        parts.append(
            f'<g class="f" onclick="zoom(this)" style="cursor:pointer"><title>{html.escape(tip)}</title>'
            f'<rect x="{px + 10:.2f}" y="{y}" width="{max(pw - 0.5, 0.1):.2f}" height="{row - 1}" '
            f'fill="{color(label)}" data-x="{x:.6f}" data-w="{w:.6f}"/>'
            f'<text x="{px + 13:.2f}" y="{y + row - 5}" data-t="{html.escape(label)}">'
            f"{html.escape(text)}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("raw", type=Path, help="py-spy record --format raw output")
    p.add_argument("--svg", type=Path, help="write a flame graph here")
    p.add_argument("--title", default="")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args(argv)
    profile = Profile.read(a.raw)
    if a.svg is not None:
        a.svg.write_text(svg(profile, a.title or a.raw.name))
    print(summary(profile, a.top), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
