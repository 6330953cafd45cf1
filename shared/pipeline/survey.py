"""A first reading of a mail's files for the routes that look at their bytes (`duplicate`, `protected`).

Routes are decided before anything is stored (the deciding route picks the container), but a file's sha256
and its protection are known only once its bytes have passed. So when a route has such a condition, the mail
is read once before the decision, as `rawmail.py` already reads a raw mail when a route looks at its files:
every file found (containers opened, as the store will) is hashed and checked, its bytes kept nowhere but
in the spool the store then reads from. The mail is `duplicate` when a file the rules keep was claimed by
another mail first (one read of its hash record, no claim: the claim is the store's, after the commit) and
`protected` when a file or the mail itself cannot be read.

Two mails with the same new file at the same moment both see no record here and take the same route; the
store's claim still makes one of them the duplicate, and marks it so (manifest, tag, hand-off).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from ..unpack.base import Encrypted, Found, Note, Sink
from ..unpack.protection import ProtectionCheck, rights_protected
from .duplicates import Duplicates
from .layout import sanitize_name
from .routes import MailFacts
from .rules import AttachmentRules


@dataclass(frozen=True)
class Seen:
    sha256: str
    size: int
    kept: bool  # the rules keep it (judged as the store will, its size included)


class _Checked:
    """One file as it passes: hashed, and checked for protection."""

    def __init__(self, survey: Survey, found: Found) -> None:
        self.survey = survey
        self.found = found
        self.sha = hashlib.sha256()
        self.size = 0
        self.check = ProtectionCheck(found.name, found.content_type)

    async def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        await self.check.write(data)

    async def close(self) -> None:
        if await self.check.result():
            self.survey.protected = True
        rules = self.survey.rules
        name = sanitize_name(self.found.name)
        kept = rules.skip_reason(name, self.found.content_type, self.found.inline, self.size) is None
        self.survey.seen.append(Seen(self.sha.hexdigest(), self.size, kept))


class Survey:
    """The unpacker's handler for the first reading; nodes are depths (the mail is 0)."""

    def __init__(self, rules: AttachmentRules) -> None:
        self.rules = rules
        self.seen: list[Seen] = []
        self.found: list[Found] = []  # the mail's own files (depth 1), as routes list them
        self.protected = False

    def sink(self, found: Found) -> Sink:
        return _Checked(self, found)

    async def open(self, parent: int, found: Found, container: bool) -> tuple[int, Sink | None] | None:
        if parent == 0:
            self.found.append(found)
        if found.protected or rights_protected(found.name, found.content_type):
            self.protected = True
        if found.skipped is not None:
            return parent + 1, None
        return parent + 1, self.sink(found)

    def note(self, node: int, note: Note) -> None:
        if isinstance(note, Encrypted) and not note.decrypted:
            self.protected = True

    async def discard(self, node: int, reason: str) -> None:
        return None

    async def judge(self, facts: MailFacts, duplicates: Duplicates) -> MailFacts:
        """The facts with `duplicate` and `protected` as the files' bytes tell."""
        duplicate = False
        for seen in self.seen:
            looked_up = seen.kept and duplicates.applies("file", seen.size)
            if looked_up and await duplicates.seen_before(seen.sha256, facts.mailbox, facts.message_key):
                duplicate = True
                break
        return replace(facts, duplicate=duplicate, protected=self.protected)
