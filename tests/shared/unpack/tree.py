"""A handler for the unpack tests: every file found becomes a node holding its bytes, as a tree."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from shared.unpack.base import Found, Note
from shared.unpack.options import UnpackOptions
from shared.unpack.smime import DecryptionKey
from shared.unpack.tree import Unpacker


class Node:
    def __init__(self, found: Found | None, parent: Node | None) -> None:
        self.found = found
        self.parent = parent
        self.data = bytearray()
        self.closed = False
        self.notes: list[Note] = []
        self.children: list[Node] = []
        self.discarded: str | None = None

    @property
    def name(self) -> str:
        return self.found.name if self.found else "(mail)"

    @property
    def depth(self) -> int:
        return 0 if self.parent is None else self.parent.depth + 1

    def walk(self) -> Iterator[Node]:
        for child in self.children:
            yield child
            yield from child.walk()

    def by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.walk()}

    def kept(self) -> dict[str, bytes]:
        """The files below that were written whole and not discarded."""
        return {n.name: bytes(n.data) for n in self.walk() if n.closed and not n.discarded}

    async def write(self, data: bytes) -> None:
        assert not self.closed
        self.data += data

    async def close(self) -> None:
        assert not self.closed
        self.closed = True


class Recorder:
    """The tests' Handler: keeps every file (unless `skip` names it), records notes and discards."""

    def __init__(self, skip: Sequence[str] = ()) -> None:
        self.skip = set(skip)

    async def open(self, parent: Node, found: Found, container: bool) -> tuple[Node, Node | None] | None:
        node = Node(found, parent)
        parent.children.append(node)
        if found.skipped is not None or found.name in self.skip:
            return node, None
        return node, node

    def note(self, node: Node, note: Note) -> None:
        node.notes.append(note)

    async def discard(self, node: Node, reason: str) -> None:
        node.discarded = reason
        for child in node.walk():
            child.discarded = reason


async def feed(sink: object, raw: bytes, chunk: int) -> None:
    for start in range(0, len(raw), chunk):
        await sink.write(raw[start : start + chunk])  # type: ignore[attr-defined]
    await sink.close()  # type: ignore[attr-defined]


def _unpacker(recorder: Recorder, options: UnpackOptions | None, keys: Sequence[DecryptionKey]) -> Unpacker[Node]:
    async def provide() -> Sequence[DecryptionKey]:
        return keys

    return Unpacker(recorder, options or UnpackOptions(), provide)


async def unpack_attachment(
    raw: bytes,
    name: str,
    content_type: str,
    *,
    chunk: int = 4096,
    options: UnpackOptions | None = None,
    keys: Sequence[DecryptionKey] = (),
    skip: Sequence[str] = (),
) -> Node:
    """`raw` as a mail's attachment; the node returned is the attachment's."""
    root = Node(None, None)
    top = Node(Found(name, content_type), root)
    root.children.append(top)

    unpacker = _unpacker(Recorder(skip), options, keys)
    sink = unpacker.attachment(top, Found(name, content_type), top)
    assert sink is not None
    try:
        await feed(sink, raw, chunk)
    finally:
        await unpacker.abort()
    return top


class Bodies:
    """The mail's own body parts offered to the body hook (SAVE_BODY): content type, charset, decoded bytes."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str | None, Node]] = []

    async def open(self, content_type: str, charset: str | None) -> Node:
        node = Node(Found("(body)", content_type), None)
        self.parts.append((content_type, charset, node))
        return node

    def texts(self) -> list[tuple[str, str | None, bytes]]:
        assert all(node.closed for _, _, node in self.parts)
        return [(content_type, charset, bytes(node.data)) for content_type, charset, node in self.parts]


async def unpack_mail(
    raw: bytes,
    *,
    chunk: int = 4096,
    options: UnpackOptions | None = None,
    keys: Sequence[DecryptionKey] = (),
    bodies: Bodies | None = None,
) -> Node:
    """`raw` as a whole mail (IMAP, POP3): the root node's children are its files; `bodies` gets its body parts."""
    root = Node(None, None)
    unpacker = _unpacker(Recorder(), options, keys)
    try:
        await feed(unpacker.mail(root, bodies.open if bodies is not None else None), raw, chunk)
    finally:
        await unpacker.abort()
    return root
