"""Type names for JSON as orjson decodes and encodes it.

A JSON object's values are whatever the document holds (str, int, float, bool, None,
lists, objects — or an ``orjson.Fragment`` on the way out), so its value type is ``Any``:
the code reading one checks each field it takes (see protocol/centrifugo/commands.py).
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: a JSON object: a command's params, a reply's body, a control message, a node's info
JsonObject: TypeAlias = dict[str, Any]
