"""Reading and writing S3's XML bodies, with or without the S3 namespace on the elements."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Iterator
from xml.sax.saxutils import escape

from gateway.s3errors import internal_error, malformed_xml

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
ET.register_namespace("", S3_NS)


def local(tag: str) -> str:
    """The element name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def child(element: ET.Element, name: str) -> ET.Element | None:
    for item in element:
        if local(item.tag) == name:
            return item
    return None


def children(element: ET.Element, name: str) -> Iterator[ET.Element]:
    return (item for item in element if local(item.tag) == name)


def text(element: ET.Element, name: str) -> str | None:
    found = child(element, name)
    return None if found is None else (found.text or "")


def parse_request(body: bytes, root_name: str) -> ET.Element:
    """A client's XML body; anything else is S3's MalformedXML."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        raise malformed_xml() from None
    if local(root.tag) != root_name:
        raise malformed_xml()
    return root


def parse_response(body: bytes) -> ET.Element:
    """An upstream's XML answer; an unparseable one is the upstream's failure, a 500."""
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise internal_error() from None


def serialize(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def render(root_name: str, fields: dict[str, str]) -> bytes:
    """``<root xmlns=S3>`` with one text element per field, in order."""
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root_name} xmlns="{S3_NS}">{inner}</{root_name}>'.encode()


def xml_text(value: str) -> str:
    """XML element text that parses back to ``value``: a raw CR would be read as LF, naming
    another key than the one checked (clients send it as `&#13;`)."""
    return escape(value, {"\r": "&#13;"})
