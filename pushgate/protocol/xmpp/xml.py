"""A hardened, tiny XML codec for XMPP: parse one complete document, write stanzas.

Parsing uses expat with everything XMPP forbids refused outright (RFC 6120 §11.1): a
document type declaration, entity declarations, processing instructions and comments.
With no DTD there are no entities besides the five predefined ones, so an entity
expansion attack ("billion laughs") or an external entity never gets off the ground.
Size is checked before parsing and element depth while parsing, both against limits
the caller gives. Elements come out as small ``Element`` values with namespace-qualified
names; ``escape_text``/``escape_attr`` and ``Element.to_bytes`` write XML back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn
from xml.parsers import expat

XML_NS = "http://www.w3.org/XML/1998/namespace"


class XmlError(ValueError):
    """The input is not acceptable XML. ``condition`` is the XMPP stream error it earns."""

    def __init__(self, message: str, condition: str = "not-well-formed") -> None:
        super().__init__(message)
        self.condition = condition


class Element:
    """One element: namespace, local name, attributes (``"ns local"`` keys for namespaced
    attributes, plain names otherwise), text directly inside, and child elements."""

    __slots__ = ("attrs", "children", "name", "ns", "text")

    def __init__(
        self,
        name: str,
        ns: str = "",
        attrs: dict[str, str] | None = None,
        children: list[Element] | None = None,
        text: str = "",
    ) -> None:
        self.name = name
        self.ns = ns
        self.attrs = attrs if attrs is not None else {}
        self.children = children if children is not None else []
        self.text = text

    def __repr__(self) -> str:
        return f"<Element {{{self.ns}}}{self.name} {self.attrs!r} children={len(self.children)}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.name == other.name
            and self.ns == other.ns
            and self.attrs == other.attrs
            and self.text == other.text
            and self.children == other.children
        )

    def get(self, attr: str, default: str = "") -> str:
        return self.attrs.get(attr, default)

    def find(self, name: str, ns: str | None = None) -> Element | None:
        """The first child called ``name`` (in ``ns``, when given)."""
        for child in self.children:
            if child.name == name and (ns is None or child.ns == ns):
                return child
        return None

    def find_text(self, name: str, ns: str | None = None) -> str | None:
        child = self.find(name, ns)
        return None if child is None else child.text

    def to_bytes(self, parent_ns: str = "") -> bytes:
        return self.to_str(parent_ns).encode()

    def to_str(self, parent_ns: str = "") -> str:
        parts: list[str] = []
        self._write(parts, parent_ns)
        return "".join(parts)

    def _write(self, out: list[str], parent_ns: str) -> None:
        out.append("<" + self.name)
        if self.ns != parent_ns:
            out.append(f' xmlns="{escape_attr(self.ns)}"')
        prefixes: dict[str, str] = {}
        for key, value in self.attrs.items():
            ns, _, local = key.rpartition(" ")
            if not ns:
                out.append(f' {local}="{escape_attr(value)}"')
            elif ns == XML_NS:
                out.append(f' xml:{local}="{escape_attr(value)}"')
            else:
                prefix = prefixes.get(ns)
                if prefix is None:
                    prefix = prefixes[ns] = f"ns{len(prefixes)}"
                    out.append(f' xmlns:{prefix}="{escape_attr(ns)}"')
                out.append(f' {prefix}:{local}="{escape_attr(value)}"')
        if not self.children and not self.text:
            out.append("/>")
            return
        out.append(">")
        if self.text:
            out.append(escape_text(self.text))
        for child in self.children:
            child._write(out, self.ns)
        out.append(f"</{self.name}>")


_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"})


def escape_text(text: str) -> str:
    return text.translate(_TEXT)


def escape_attr(text: str) -> str:
    return text.translate(_ATTR)


def _refuse(what: str) -> Callable[..., NoReturn]:
    def handler(*args: object) -> NoReturn:
        raise XmlError(f"{what} are not allowed in XMPP", "restricted-xml")

    return handler


class _Builder:
    __slots__ = ("depth", "max_depth", "root", "stack")

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.stack: list[Element] = []
        self.root: Element | None = None
        self.depth = 0

    def start(self, qname: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise XmlError(f"elements nested deeper than {self.max_depth}", "policy-violation")
        ns, _, name = qname.rpartition(" ")
        element = Element(name, ns, attrs)
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)

    def end(self, qname: str) -> None:
        self.depth -= 1
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text += text


def parse(data: bytes | str, *, max_bytes: int, max_depth: int = 32) -> Element:
    """One complete XML document → its root element; XmlError for anything refused."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise XmlError(f"document larger than {max_bytes} bytes", "policy-violation")
    builder = _Builder(max_depth)
    parser = expat.ParserCreate("utf-8", namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse("document type declarations")
    parser.EntityDeclHandler = _refuse("entity declarations")
    parser.UnparsedEntityDeclHandler = _refuse("entity declarations")
    parser.ExternalEntityRefHandler = _refuse("external entities")
    parser.ProcessingInstructionHandler = _refuse("processing instructions")
    parser.CommentHandler = _refuse("comments")
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.buffer_text = True
    parser.ordered_attributes = False
    try:
        parser.Parse(raw, True)
    except expat.ExpatError as exc:
        raise XmlError(f"not well-formed XML: {exc}") from None
    except RecursionError:  # pragma: no cover - the depth limit comes first
        raise XmlError("too deep", "policy-violation") from None
    if builder.root is None:
        raise XmlError("no element")
    return builder.root
