"""XMPP names and the stanzas pushgate writes: JIDs, stream features, SASL answers,
iq results and errors, presence, chat and headline messages.

Every builder returns bytes of one complete element that carries its own namespace
declarations, so the same bytes are valid inside a BOSH ``<body/>`` and as one
RFC 7395 WebSocket frame. Server-to-client stanzas omit ``to``: the stream names the
recipient (RFC 6120 §8.1.1.1), which is what lets one publication's ``<message/>`` be
built once and written to every XMPP recipient.
"""

from __future__ import annotations

from dataclasses import dataclass

from pushgate.protocol.xmpp.xml import escape_attr, escape_text

NS_CLIENT = "jabber:client"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_STREAMS_ERR = "urn:ietf:params:xml:ns:xmpp-streams"
NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_JSON = "urn:xmpp:json:0"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
#: pushgate's client RPC over iq: ``<rpc xmlns=… method='…'>JSON</rpc>`` (docs/xmpp.md)
NS_RPC = "urn:pushgate:rpc"

SHOW_VALUES = ("away", "chat", "dnd", "xa")


@dataclass(frozen=True, slots=True)
class Jid:
    local: str
    domain: str
    resource: str = ""

    @classmethod
    def parse(cls, text: str) -> Jid | None:
        """``local@domain/resource`` (local and resource optional), None if malformed."""
        if not text or len(text) > 3071:
            return None
        bare, slash, resource = text.partition("/")
        local, at, domain = bare.rpartition("@")
        if (at and not local) or not domain or (slash and not resource):
            return None
        return cls(local, domain.lower(), resource)

    @property
    def bare(self) -> str:
        return f"{self.local}@{self.domain}" if self.local else self.domain

    def __str__(self) -> str:
        return f"{self.bare}/{self.resource}" if self.resource else self.bare


def _attrs(**attrs: str | None) -> str:
    return "".join(
        f' {key.rstrip("_").replace("__", ":")}="{escape_attr(value)}"'
        for key, value in attrs.items()
        if value is not None and value != ""
    )


# --- stream -----------------------------------------------------------------------
def features_sasl() -> bytes:
    return (
        f'<stream:features xmlns:stream="{NS_STREAM}"><mechanisms xmlns="{NS_SASL}">'
        "<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    ).encode()


def features_bind() -> bytes:
    return (
        f'<stream:features xmlns:stream="{NS_STREAM}"><bind xmlns="{NS_BIND}"/>'
        f'<session xmlns="{NS_SESSION}"><optional/></session></stream:features>'
    ).encode()


def ws_open(domain: str, stream_id: str) -> bytes:
    return (
        f'<open xmlns="{NS_FRAMING}"{_attrs(from_=domain, id=stream_id)} version="1.0"'
        ' xml:lang="en"/>'
    ).encode()


WS_CLOSE = f'<close xmlns="{NS_FRAMING}"/>'.encode()


def stream_error(condition: str, text: str = "") -> bytes:
    detail = f'<text xmlns="{NS_STREAMS_ERR}">{escape_text(text)}</text>' if text else ""
    return (
        f'<stream:error xmlns:stream="{NS_STREAM}"><{condition} xmlns="{NS_STREAMS_ERR}"/>'
        f"{detail}</stream:error>"
    ).encode()


# --- SASL -------------------------------------------------------------------------
SASL_SUCCESS = f'<success xmlns="{NS_SASL}"/>'.encode()


def sasl_failure(condition: str, text: str = "") -> bytes:
    detail = f"<text>{escape_text(text)}</text>" if text else ""
    return f'<failure xmlns="{NS_SASL}"><{condition}/>{detail}</failure>'.encode()


# --- iq ---------------------------------------------------------------------------
def iq_result(iq_id: str, payload: str = "", to: str | None = None) -> bytes:
    head = f'<iq xmlns="{NS_CLIENT}" type="result"{_attrs(id=iq_id, to=to)}'
    return (f"{head}>{payload}</iq>" if payload else f"{head}/>").encode()


def bind_result(iq_id: str, jid: str) -> bytes:
    return iq_result(iq_id, f'<bind xmlns="{NS_BIND}"><jid>{escape_text(jid)}</jid></bind>')


def stanza_error(
    kind: str,
    stanza_id: str,
    condition: str,
    error_type: str = "cancel",
    *,
    from_: str | None = None,
    text: str = "",
) -> bytes:
    """``<iq|message|presence type='error'>`` with an RFC 6120 §8.3 condition."""
    detail = f'<text xmlns="{NS_STANZAS}">{escape_text(text)}</text>' if text else ""
    return (
        f'<{kind} xmlns="{NS_CLIENT}" type="error"{_attrs(id=stanza_id, from_=from_)}>'
        f'<error type="{error_type}"><{condition} xmlns="{NS_STANZAS}"/>{detail}</error>'
        f"</{kind}>"
    ).encode()


def rpc_result(iq_id: str, json_text: str) -> bytes:
    """The answer to an RPC iq: the backend's JSON result inside ``<rpc/>``."""
    return iq_result(iq_id, f'<rpc xmlns="{NS_RPC}">{escape_text(json_text)}</rpc>')


#: a hub error code → (RFC 6120 condition, error type) of an RPC's error
RPC_CONDITIONS = {
    101: ("not-authorized", "auth"),
    103: ("forbidden", "auth"),
    104: ("item-not-found", "cancel"),
    107: ("bad-request", "modify"),
    108: ("service-unavailable", "cancel"),
}


def rpc_error(iq_id: str, code: int, message: str, temporary: bool) -> bytes:
    """An RPC's error: the closest RFC 6120 condition, and the code and message the
    backend gave in ``<rpc-error xmlns='urn:pushgate:rpc' code='…'>``."""
    if temporary:
        condition, error_type = "internal-server-error", "wait"
    else:
        condition, error_type = RPC_CONDITIONS.get(code, ("undefined-condition", "cancel"))
    return (
        f'<iq xmlns="{NS_CLIENT}" type="error"{_attrs(id=iq_id)}>'
        f'<error type="{error_type}"><{condition} xmlns="{NS_STANZAS}"/>'
        f'<text xmlns="{NS_STANZAS}">{escape_text(message)}</text>'
        f'<rpc-error xmlns="{NS_RPC}" code="{code}"/></error></iq>'
    ).encode()


def roster_result(iq_id: str, bare_jids: list[str]) -> bytes:
    items = "".join(
        f'<item jid="{escape_attr(jid)}" subscription="both"/>' for jid in sorted(bare_jids)
    )
    return iq_result(iq_id, f'<query xmlns="{NS_ROSTER}">{items}</query>')


# --- presence ---------------------------------------------------------------------
def presence(
    from_: str,
    *,
    type_: str | None = None,
    show: str = "",
    status: str = "",
    extra: str = "",
) -> bytes:
    inner = ""
    if show:
        inner += f"<show>{escape_text(show)}</show>"
    if status:
        inner += f"<status>{escape_text(status)}</status>"
    inner += extra
    head = f'<presence xmlns="{NS_CLIENT}"{_attrs(from_=from_, type=type_)}'
    return (f"{head}>{inner}</presence>" if inner else f"{head}/>").encode()


# --- messages ---------------------------------------------------------------------
def chat_message(
    from_: str, body: str, *, type_: str = "chat", msg_id: str = "", thread: str = ""
) -> bytes:
    extra = f"<thread>{escape_text(thread)}</thread>" if thread else ""
    return (
        f'<message xmlns="{NS_CLIENT}"{_attrs(type=type_, from_=from_, id=msg_id)}>'
        f"<body>{escape_text(body)}</body>{extra}</message>"
    ).encode()


def headline(from_: str, node: str, item_id: str, json_text: str) -> bytes:
    """A publication as XEP-0060 event notification: the JSON in an XEP-0335 container."""
    return (
        f'<message xmlns="{NS_CLIENT}" type="headline"{_attrs(from_=from_)}>'
        f'<event xmlns="{NS_PUBSUB_EVENT}"><items{_attrs(node=node)}>'
        f'<item{_attrs(id=item_id)}><json xmlns="{NS_JSON}">{escape_text(json_text)}</json>'
        "</item></items></event></message>"
    ).encode()
