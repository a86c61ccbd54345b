"""The wire protocols a node speaks, each a plug-in: ``DIALECTS`` is what create_app serves.

A dialect (base.py) owns its application state, its routes and its start and stop; the
server loops over them. docs/architecture.md, "How to add a dialect", says what a new
one takes.
"""

from pushgate.dialects.base import Dialect
from pushgate.dialects.centrifugo import Centrifugo
from pushgate.dialects.stomp import Stomp
from pushgate.dialects.xmpp import Xmpp

#: served in this order: their routes are added, and they start and stop, in it
DIALECTS: tuple[type[Dialect], ...] = (Centrifugo, Stomp, Xmpp)

__all__ = ["DIALECTS", "Dialect"]
