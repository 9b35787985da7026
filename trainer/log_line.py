"""A log line that is written and parsed from one template, so the two cannot drift apart.

``LogLine("Code size: {bytes:int} bytes")`` formats with ``.format(bytes=46184)`` and reads a
line back with ``.match(line)`` (``{"bytes": 46184}``, or None). Each field names a kind: how
it is written, what it matches and how it is read. The trainer writes its step lines with these,
and a records folder's lines (``packer/records/lines.py``) are made the same way.
"""
from __future__ import annotations

import re
from typing import Any, Callable

NUM = r"[0-9]+(?:\.[0-9]+)?"
KINDS: dict[str, tuple[str, str, Callable[[str], Any]]] = {  # kind -> (format, pattern, parse)
    "int": ("{}", r"[0-9]+", int),
    "ms": ("{:.0f}", r"[0-9]+", int),  # a duration in whole milliseconds, from a float
    "f2": ("{:.2f}", NUM, float),
    "f4": ("{:.4f}", NUM, float),
    "f8": ("{:.8f}", NUM, float),
    "repr": ("{!r}", r"[0-9.e+-]+", float),  # every digit of a float, to compare exactly
    "word": ("{}", r"\S+", str),
    "sha256": ("{}", r"[0-9a-f]{64}", str),
}
FIELD = re.compile(r"\{(\w+):(\w+)\}")


class LogLine:
    """One line's template: literal text and ``{name:kind}`` fields (kinds: :data:`KINDS`)."""

    def __init__(self, template: str) -> None:
        self.template = template
        self.kinds: dict[str, str] = {}
        out, pattern, at = [], [], 0
        for m in FIELD.finditer(template):
            name, kind = m.groups()
            if kind not in KINDS or name in self.kinds:
                raise ValueError(f"log line template {template!r}: bad field {m.group()}")
            self.kinds[name] = kind
            literal = template[at:m.start()]
            out.append(literal.replace("{", "{{").replace("}", "}}") + KINDS[kind][0].replace("{", "{" + name, 1))
            pattern.append(re.escape(literal) + f"(?P<{name}>{KINDS[kind][1]})")
            at = m.end()
        out.append(template[at:].replace("{", "{{").replace("}", "}}"))
        pattern.append(re.escape(template[at:]))
        self.writer, self.pattern = "".join(out), re.compile("".join(pattern))

    def format(self, **values: Any) -> str:
        if set(values) != set(self.kinds):
            raise TypeError(f"log line {self.template!r} takes {sorted(self.kinds)}, got {sorted(values)}")
        return self.writer.format(**values)

    def match(self, line: str) -> dict[str, Any] | None:
        """The fields of ``line`` (surrounding whitespace ignored), or None if it is not this line."""
        m = self.pattern.fullmatch(line.strip())
        return None if m is None else {k: KINDS[self.kinds[k]][2](v) for k, v in m.groupdict().items()}


STEP_VAL = LogLine("step:{step:int}/{iterations:int} val_loss:{val_loss:f4} val_bpb:{val_bpb:f4} "
                   "train_time:{train_ms:ms}ms step_avg:{step_avg_ms:f2}ms")
