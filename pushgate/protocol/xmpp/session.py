"""An XMPP session: the hub's sink for one XMPP stream, and its stanza dispatcher.

The same session serves BOSH and RFC 7395 WebSocket; the transport feeds it parsed
top-level elements and gives it a ``StanzaWriter``. What the stanzas mean on the hub:

* SASL PLAIN: the password is a pushgate connection JWT (``Client.connect``); the JWT's
  ``channels`` become server-side subscriptions. Resource binding makes the JID
  ``<user>@<domain>/<resource>``; from then on publications flow.
* Publications arrive as ``<message type='headline'>`` holding an XEP-0060 event whose
  ``<item id='<offset>'>`` carries the JSON (XEP-0335 ``<json/>``); a publication is
  encoded once for every XMPP recipient on one framing (``Publication.cache``), which
  the missing ``to`` allows: the stream itself names the recipient.
* Contacts are the users present in the user's contacts-namespace channels (``team:*``).
  Presence rides on those channels' presence and join/leave: an XMPP subscriber's
  ``chan_info`` there is ``{"xmpp": resource, "show": …, "status": …}``; a join is an
  available presence (or a change of show), a leave an unavailable one.
* ``<message type='chat'>`` to ``user@domain`` is a hub ``message`` order for that user
  (every resource, on every node), allowed only to a contact present somewhere in the
  cluster (``chat.py``); it reaches the user's XMPP connections, and those of other
  protocols (as a message push) only with ``xmpp.chat_to_other_dialects``.
  ``type='groupchat'`` to ``room@<muc domain>`` publishes to channel ``<rooms>:<room>``;
  a room nick is always the user's own name, and what others see comes from the
  publication's authenticated publisher, never from its data.
* Anything else is answered with ``service-unavailable`` (iq) or ignored (presence
  subscriptions: the roster is implied by the channels).
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import orjson

from pushgate.auth import TokenError, looks_like_jwt
from pushgate.engine.base import BinaryData
from pushgate.engine.tracking import ACTIVE, HIDDEN, IDLE
from pushgate.hub.errors import Disconnect, DisconnectError, HubError
from pushgate.hub.sink import JoinCache
from pushgate.json_types import JsonObject
from pushgate.protocol.xmpp import stanzas as st
from pushgate.protocol.xmpp.chat import (
    ChatRate,
    Verdict,
    chat_payload,
    present_contact,
    xmpp_resource,
)
from pushgate.protocol.xmpp.stanzas import Jid
from pushgate.protocol.xmpp.xml import Element

if TYPE_CHECKING:
    from pushgate.config import Config
    from pushgate.engine.base import ClientInfo, Publication
    from pushgate.hub.hub import Hub
    from pushgate.hub.results import SubscribeResult

log = logging.getLogger("pushgate.xmpp")

DIALECT = "xmpp"
#: users whose last positions the resume store keeps at most
RESUME_MAX_USERS = 100_000
#: a join's parsed contact presence, shared by every XMPP recipient of the event
CONTACT_KEY = (DIALECT, "contact")

Mark = tuple[str, int, str]


class StreamError(Exception):
    """End the stream with an RFC 6120 stream error condition."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text


class StanzaWriter(Protocol):
    #: the framing of ``frame``'s bytes (``bosh``, ``ws``): the encode-once cache key
    framing: str
    #: stream positions the client has been handed, per channel: channel → (offset, epoch)
    positions: dict[str, tuple[int, str]]

    @property
    def closed(self) -> bool: ...

    def frame(self, stanza: bytes) -> bytes: ...

    def write(self, data: bytes, mark: Mark | None = None) -> None:
        """Queue framed bytes without blocking; ``mark`` is the publication position they
        carry, recorded in ``positions`` once the client is handed them."""

    def end(self, condition: str, text: str = "") -> None:
        """End the stream: with a stream error ``condition`` ("" = a normal close)."""

    def queued_bytes(self) -> int:
        """Bytes written and not yet sent (the ``pushgate_write_queue_bytes`` gauge)."""


@dataclass(slots=True)
class XmppSettings:
    domain: str
    muc_domain: str
    contacts_prefix: str
    rooms_prefix: str
    boundary: str
    chat_per_second: int = 0
    chat_burst: int = 1
    chat_to_other_dialects: bool = False

    @classmethod
    def from_config(cls, config: Config) -> XmppSettings:
        x = config.xmpp
        boundary = config.channel.namespace_boundary
        return cls(
            domain=x.domain.lower(),
            muc_domain=(x.muc_domain or f"conference.{x.domain}").lower(),
            contacts_prefix=f"{x.contacts_namespace}{boundary}" if x.contacts_namespace else "",
            rooms_prefix=f"{x.rooms_namespace}{boundary}" if x.rooms_namespace else "",
            boundary=boundary,
            chat_per_second=x.chat_per_second,
            chat_burst=x.chat_burst,
            chat_to_other_dialects=x.chat_to_other_dialects,
        )

    def is_contacts_channel(self, channel: str) -> bool:
        return bool(self.contacts_prefix) and channel.startswith(self.contacts_prefix)

    def contacts_channels(self, channels: Iterable[str]) -> list[str]:
        return [channel for channel in channels if self.is_contacts_channel(channel)]

    def room_of(self, channel: str) -> str | None:
        if self.rooms_prefix and channel.startswith(self.rooms_prefix):
            return channel[len(self.rooms_prefix) :]
        return None


class ResumeStore:
    """Per user, the last stream positions an XMPP client was handed, so that a login
    after the session is gone resumes each server-side channel from history."""

    def __init__(self, ttl: float, max_users: int = RESUME_MAX_USERS) -> None:
        self.ttl = ttl
        self.max_users = max_users
        self._by_user: OrderedDict[str, tuple[float, dict[str, tuple[int, str]]]] = OrderedDict()

    def save(self, user: str, positions: dict[str, tuple[int, str]]) -> None:
        if not self.ttl or not user or not positions:
            return
        _, known = self._by_user.pop(user, (0.0, {}))
        merged = {**known}
        for channel, (offset, epoch) in positions.items():
            old = merged.get(channel)
            if old is None or old[1] != epoch or offset > old[0]:
                merged[channel] = (offset, epoch)
        self._by_user[user] = (time.monotonic() + self.ttl, merged)
        while len(self._by_user) > self.max_users:
            self._by_user.popitem(last=False)

    def load(self, user: str) -> dict[str, tuple[int, str]]:
        entry = self._by_user.get(user)
        if entry is None:
            return {}
        if entry[0] < time.monotonic():
            del self._by_user[user]
            return {}
        return dict(entry[1])


class Phase:
    AUTH = 0  # waiting for SASL
    RESTART = 1  # authenticated, waiting for the stream restart
    BIND = 2  # restarted, waiting for resource binding
    BOUND = 3  # a full JID: stanzas flow


def disconnect_condition(disconnect: Disconnect) -> str:
    """The stream error condition a hub disconnect becomes."""
    code = disconnect.code
    if code == 3001:
        return "system-shutdown"
    if code in (3005, 3500):
        return "not-authorized"
    if code in (3008, 3013, 3504, 3505):
        return "policy-violation"
    if code in (3012, 3502):
        return "connection-timeout"
    if code == 3501:
        return "bad-format"
    if disconnect.reconnect:
        return "reset"
    return "conflict" if code == 3503 else "undefined-condition"


@dataclass(slots=True)
class _Contact:
    """A contact's connection seen available (from another connection's join)."""

    #: the contacts channels it was seen in
    channels: set[str]
    #: the last presence stanza sent for it
    presence: bytes
    jid: str
    user: str
    #: its XMPP resource (None: a connection of another protocol)
    resource: str | None


class XmppSession:
    dialect = DIALECT

    __slots__ = (
        "_chat_rate",
        "_contacts",
        "_key",
        "_recovered",
        "available",
        "client",
        "hub",
        "jid",
        "phase",
        "resource",
        "resume",
        "rooms",
        "settings",
        "show",
        "status",
        "stream_id",
        "wants_pong",
        "writer",
    )

    def __init__(
        self,
        hub: Hub,
        writer: StanzaWriter,
        transport: str,
        settings: XmppSettings,
        resume: ResumeStore,
    ) -> None:
        self.hub = hub
        self.writer = writer
        self.settings = settings
        self.resume = resume
        self.wants_pong = False
        self._key = (DIALECT, writer.framing)
        self.client = hub.new_client(self, transport)
        self.client.protocol = DIALECT
        self.phase = Phase.AUTH
        self.stream_id = uuid.uuid4().hex
        self.resource = ""
        self.jid = ""
        self.available = False
        self.show = ""
        self.status = ""
        #: contacts' connections seen available, by client id
        self._contacts: dict[str, _Contact] = {}
        #: joined rooms: channel → nick
        self.rooms: dict[str, str] = {}
        self._recovered: list[tuple[str, list[Publication]]] = []
        self._chat_rate = ChatRate(settings.chat_per_second, settings.chat_burst)

    # --- stream -------------------------------------------------------------------
    def check_domain(self, to: str) -> None:
        if to and to.lower() != self.settings.domain:
            raise StreamError("host-unknown", f"this server serves {self.settings.domain}")

    def open_stream(self) -> None:
        """A stream (re)start: write the features of the current phase."""
        if self.phase == Phase.AUTH:
            self._send(st.features_sasl())
        elif self.phase == Phase.RESTART:
            self.phase = Phase.BIND
            self._send(st.features_bind())
        else:
            raise StreamError("policy-violation", "stream restart after binding")

    def _send(self, stanza: bytes) -> None:
        writer = self.writer
        writer.write(writer.frame(stanza))

    async def handle(self, element: Element) -> None:
        """One top-level element from the client; raises StreamError to end the stream."""
        if self.client.closed or self.writer.closed:
            return
        name, ns = element.name, element.ns
        if not self._within_rate(element):
            return
        if ns == st.NS_SASL:
            await self._sasl(element)
            return
        if ns not in ("", st.NS_CLIENT):
            raise StreamError("unsupported-stanza-type", f"{{{ns}}}{name}")
        if self.phase != Phase.BOUND and not (name == "iq" and self.phase == Phase.BIND):
            raise StreamError("not-authorized", f"{name} before authentication and binding")
        try:
            if name == "iq":
                await self._iq(element)
            elif name == "presence":
                await self._presence(element)
            elif name == "message":
                await self._message(element)
            else:
                raise StreamError("unsupported-stanza-type", name)
        except DisconnectError as exc:
            self.client.disconnect(exc.disconnect)

    def _within_rate(self, element: Element) -> bool:
        """Spend the connection's command rate (client.commands_per_second) on a stanza.
        Past it an iq or message gets ``resource-constraint`` (wait), a presence is
        dropped; refusals in a row end the stream (policy-violation)."""
        try:
            self.client.check_command_rate()
        except HubError:
            if element.name in ("iq", "message") and element.ns in ("", st.NS_CLIENT):
                stanza_id = element.get("id")
                self._send(st.stanza_error(element.name, stanza_id, "resource-constraint", "wait"))
            return False
        except DisconnectError:
            raise StreamError("policy-violation", "too many stanzas") from None
        return True

    async def closed(self) -> None:
        """The transport is gone: leave the hub, remember where the client was."""
        client = self.client
        if client.user:
            self.resume.save(client.user, self.writer.positions)
        await client.closed_by_transport()

    # --- SASL ---------------------------------------------------------------------
    async def _sasl(self, element: Element) -> None:
        if element.name != "auth":
            if element.name == "abort":
                self._send(st.sasl_failure("aborted"))
                return
            raise StreamError("unsupported-stanza-type", f"SASL {element.name}")
        if self.phase != Phase.AUTH:
            raise StreamError("policy-violation", "already authenticated")
        if element.get("mechanism") != "PLAIN":
            self._send(st.sasl_failure("invalid-mechanism"))
            return
        try:
            raw = base64.b64decode(element.text.strip(), validate=True)
            _authzid, authcid, password = raw.decode().split("\x00")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._send(st.sasl_failure("malformed-request"))
            return
        client = self.client
        recover: dict[str, JsonObject] = {}
        token, data, user = password, None, ""
        if self.hub.proxies.connect is not None and not looks_like_jwt(password):
            # a password, not a token: the connect proxy checks it (the way ejabberd's
            # external authentication asks a script), with the HTTP headers
            token, user = "", authcid.partition("@")[0]
            given = {"login": authcid, "password": password}
            data = orjson.dumps({k: v for k, v in given.items() if v})
        else:
            try:
                claims = self.hub.tokens.verify_connection(password)
            except TokenError:
                claims = None
            user = claims.user if claims is not None else ""
        if user:
            for channel, (offset, epoch) in self.resume.load(user).items():
                recover[channel] = {"recover": True, "offset": offset, "epoch": epoch}
        try:
            result = await client.connect(token=token, subs=recover, data=data)
        except HubError as error:
            log.info("XMPP login refused for %r: %s", authcid, error.message)
            condition = "credentials-expired" if error.code == 109 else "not-authorized"
            self._send(st.sasl_failure(condition, error.message))
            return
        except DisconnectError as exc:
            log.info("XMPP login refused for %r: %s", authcid, exc.disconnect.reason)
            self._send(st.sasl_failure("not-authorized", exc.disconnect.reason))
            return
        local = authcid.partition("@")[0]
        if not client.user or (local and local != client.user) or not _valid_local(client.user):
            log.info("XMPP login refused: user %r, token for %r", authcid, client.user)
            self._send(st.sasl_failure("not-authorized", "the token is for another user"))
            client.disconnect(Disconnect(3500, "invalid token"))
            return
        for channel, sub_result in result.subs.items():
            if sub_result.publications:
                self._recovered.append((channel, sub_result.publications))
            if sub_result.was_recovering and not sub_result.recovered:
                log.info("XMPP %s: %s could not be resumed from history", client.user, channel)
        self.phase = Phase.RESTART
        self._send(st.SASL_SUCCESS)

    # --- iq -----------------------------------------------------------------------
    async def _iq(self, iq: Element) -> None:
        iq_type, iq_id = iq.get("type"), iq.get("id")
        if iq_type in ("result", "error"):
            return
        payload = iq.children[0] if len(iq.children) == 1 else None
        if iq_type not in ("get", "set") or payload is None:
            self._send(st.stanza_error("iq", iq_id, "bad-request", "modify"))
            return
        key = (payload.ns, payload.name, iq_type)
        if key == (st.NS_BIND, "bind", "set"):
            await self._bind(iq_id, payload)
        elif self.phase != Phase.BOUND:
            self._send(st.stanza_error("iq", iq_id, "not-authorized", "auth"))
        elif key in ((st.NS_SESSION, "session", "set"), (st.NS_PING, "ping", "get")):
            self._send(st.iq_result(iq_id))
        elif key == (st.NS_ROSTER, "query", "get"):
            self._send(st.roster_result(iq_id, await self._contact_jids()))
        elif key == (st.NS_RPC, "rpc", "set"):
            await self._rpc(iq_id, payload)
        else:
            self._send(st.stanza_error("iq", iq_id, "service-unavailable"))

    async def _rpc(self, iq_id: str, rpc: Element) -> None:
        """A client RPC (``<rpc xmlns='urn:pushgate:rpc' method='…'>JSON</rpc>``),
        answered by the rpc proxy: the result's JSON in the iq result, or an iq error."""
        method = rpc.get("method")
        text = rpc.text.strip()
        data = text.encode() if text else None
        if not method or (data is not None and not _is_json(data)):
            self._send(st.rpc_error(iq_id, 107, "an rpc needs a method and JSON data", False))
            return
        try:
            result = await self.client.rpc(method, data)
        except HubError as error:
            self._send(st.rpc_error(iq_id, error.code, error.message, error.temporary))
            return
        if type(result) is BinaryData:
            self._send(st.rpc_error(iq_id, 100, "the result is not JSON", False))
            return
        self._send(st.rpc_result(iq_id, result.decode() if result is not None else "null"))

    async def _bind(self, iq_id: str, bind: Element) -> None:
        if self.phase != Phase.BIND:
            self._send(st.stanza_error("iq", iq_id, "not-allowed"))
            return
        resource = (bind.find_text("resource") or "").strip()
        if not resource or len(resource) > 256 or "/" in resource:
            resource = uuid.uuid4().hex[:12]
        self.resource = resource
        self.jid = f"{self.client.user}@{self.settings.domain}/{resource}"
        client = self.client
        for channel, sub in list(client.subs.items()):
            if self.settings.is_contacts_channel(channel):
                # the presence entry, written at login, learns the resource: a contact's
                # chat check reads it (chat.py)
                sub.chan_info = self._presence_info()
                try:
                    await self.hub.refresh_presence(sub)
                except Exception as exc:
                    log.warning("cannot refresh %s presence in %s: %s", self.jid, channel, exc)
        self.phase = Phase.BOUND
        self._send(st.bind_result(iq_id, self.jid))
        recovered, self._recovered = self._recovered, []
        for channel, pubs in recovered:
            for pub in pubs:
                self.push_publication(channel, pub)
        client.activate_all()

    # --- presence -----------------------------------------------------------------
    def _presence_info(self) -> bytes:
        info: dict[str, str] = {"xmpp": self.resource}
        if self.show:
            info["show"] = self.show
        if self.status:
            info["status"] = self.status
        return orjson.dumps(info)

    async def _presence(self, presence: Element) -> None:
        to = presence.get("to")
        ptype = presence.get("type")
        if to:
            jid = Jid.parse(to)
            if jid is not None and jid.domain == self.settings.muc_domain and jid.local:
                await self._room_presence(presence, jid)
            # directed presence and subscription requests: the roster is implied
            return
        if ptype == "unavailable":
            if self.available:
                self.available = False
                await self._announce(False)
                await self.client.set_attention(HIDDEN)
                self._send(st.presence(self.jid, type_="unavailable"))
            return
        if ptype:
            return  # subscribe / probe / …: nothing to do
        show = (presence.find_text("show") or "").strip()
        self.show = show if show in st.SHOW_VALUES else ""
        self.status = (presence.find_text("status") or "")[:1024]
        first = not self.available
        self.available = True
        # the user's attention (hub/status.py): away, xa and dnd are idle; chat or no
        # show, active
        await self.client.set_attention(IDLE if self.show in ("away", "xa", "dnd") else ACTIVE)
        await self._announce(True)
        self._send(st.presence(self.jid, show=self.show, status=self.status))
        if first:
            await self._send_contacts_presence()

    async def _announce(self, present: bool) -> None:
        client = self.client
        for channel, sub in list(client.subs.items()):
            if not self.settings.is_contacts_channel(channel):
                continue
            sub.chan_info = self._presence_info()
            try:
                await self.hub.announce_presence(sub, present)
            except Exception as exc:
                log.warning("cannot announce %s presence in %s: %s", self.jid, channel, exc)

    async def _contact_infos(self) -> list[tuple[str, ClientInfo]]:
        out: list[tuple[str, ClientInfo]] = []
        for channel in list(self.client.subs):
            if not self.settings.is_contacts_channel(channel):
                continue
            try:
                present = await self.hub.presence(channel)
            except HubError as exc:
                log.info("no presence for contacts channel %s: %s", channel, exc.message)
                continue
            out.extend((channel, info) for info in present.values())
        return out

    async def _contact_jids(self) -> list[str]:
        users = {info.user for _, info in await self._contact_infos()}
        users.discard(self.client.user)
        return [f"{user}@{self.settings.domain}" for user in users if user]

    async def _send_contacts_presence(self) -> None:
        for channel, info in await self._contact_infos():
            self._contact_joined(channel, info, None)

    def _contact_joined(self, channel: str, info: ClientInfo, cache: JoinCache | None) -> None:
        if info.client == self.client.id or not info.user:
            return
        parsed = cache.get(CONTACT_KEY) if cache is not None else None
        if parsed is None:
            parsed = self._contact_presence(info)
            if cache is not None:
                cache[CONTACT_KEY] = parsed
        jid, show, status, resource = parsed
        key = (*self._key, "available")
        data = cache.get(key) if cache is not None else None
        if data is None:
            data = self.writer.frame(st.presence(jid, show=show, status=status))
            if cache is not None:
                cache[key] = data
        seen = self._contacts.get(info.client)
        if seen is None:
            self._contacts[info.client] = _Contact({channel}, data, jid, info.user, resource)
        else:
            seen.channels.add(channel)
            if seen.presence == data:
                return
            seen.presence = data
        self.writer.write(data)

    def _contact_left(self, channel: str, info: ClientInfo, cache: JoinCache | None) -> None:
        seen = self._contacts.get(info.client)
        if seen is None:
            return
        seen.channels.discard(channel)
        if seen.channels:
            return
        del self._contacts[info.client]
        key = (*self._key, "unavailable")
        data = cache.get(key) if cache is not None else None
        if data is None:
            data = self.writer.frame(st.presence(seen.jid, type_="unavailable"))
            if cache is not None:
                cache[key] = data
        self.writer.write(data)

    def _contact_presence(self, info: ClientInfo) -> tuple[str, str, str, str | None]:
        """A contact's JID, show and status, and its XMPP resource (None for a
        connection of another protocol, whose JID's resource is its client id)."""
        xmpp: str | None = None
        show = status = ""
        if info.chan_info:
            try:
                extra = orjson.loads(info.chan_info)
            except orjson.JSONDecodeError:
                extra = None
            if isinstance(extra, dict) and isinstance(extra.get("xmpp"), str):
                xmpp = extra["xmpp"]
                given_show, given_status = extra.get("show"), extra.get("status")
                show = given_show if given_show in st.SHOW_VALUES else ""
                status = given_status if isinstance(given_status, str) else ""
        jid = f"{info.user}@{self.settings.domain}/{xmpp or info.client}"
        return jid, show or "", status or "", xmpp

    # --- rooms --------------------------------------------------------------------
    def _room_channel(self, room: str) -> str | None:
        if not self.settings.rooms_prefix or not room:
            return None
        return self.settings.rooms_prefix + room

    async def _room_presence(self, presence: Element, jid: Jid) -> None:
        """Enter or leave a room. The nick is the user's name whatever the client asked
        for (XEP-0045 roomnicks locked down, as Prosody's enforce_registered_nickname):
        entering with another nick gets status 210 (nick assigned by the service), a
        change of nick while in the room ``not-acceptable``."""
        channel = self._room_channel(jid.local)
        room_jid = f"{jid.local}@{self.settings.muc_domain}"
        nick = self.client.user
        if channel is None:
            self._send(st.stanza_error("presence", "", "item-not-found", from_=room_jid))
            return
        if presence.get("type") == "unavailable":
            self.rooms.pop(channel, None)
            await self.client.unsubscribe(channel)
            self._send(st.presence(f"{room_jid}/{nick}", type_="unavailable"))
            return
        if presence.get("type"):
            return
        if channel in self.rooms:
            if jid.resource and jid.resource != nick:
                log.info(
                    "XMPP %s: nick change to %r in %s refused: the nick is the user name",
                    self.jid,
                    jid.resource,
                    room_jid,
                )
                self._send(
                    st.stanza_error(
                        "presence",
                        presence.get("id"),
                        "not-acceptable",
                        from_=f"{room_jid}/{jid.resource}",
                        text=f"your nick in this room is {nick}",
                    )
                )
            return
        try:
            if channel not in self.client.subs:
                sub, _ = await self.client.subscribe(channel)
            else:
                sub = None
        except HubError as error:
            condition = "forbidden" if error.code == 103 else "item-not-found"
            self._send(
                st.stanza_error(
                    "presence",
                    presence.get("id"),
                    condition,
                    "auth",
                    from_=room_jid,
                    text=error.message,
                )
            )
            return
        self.rooms[channel] = nick
        codes = '<status code="110"/>'
        if jid.resource and jid.resource != nick:
            log.info(
                "XMPP %s: entered %s as %r, not as the nick %r it asked for",
                self.jid,
                room_jid,
                nick,
                jid.resource,
            )
            codes += '<status code="210"/>'
        extra = (
            f'<x xmlns="{st.NS_MUC_USER}"><item affiliation="none" role="participant"/>{codes}</x>'
        )
        self._send(st.presence(f"{room_jid}/{nick}", extra=extra))
        if sub is not None:
            self.client.activate(sub)

    # --- messages -----------------------------------------------------------------
    async def _message(self, message: Element) -> None:
        mtype = message.get("type") or "normal"
        msg_id = message.get("id")
        jid = Jid.parse(message.get("to"))
        body = message.find_text("body")
        if jid is None:
            self._send(st.stanza_error("message", msg_id, "jid-malformed", "modify"))
            return
        if body is None or mtype in ("error", "headline"):
            return  # chat states, receipts…: nothing to carry them to
        if not self._chat_allowed_now(str(jid), msg_id):
            return
        if mtype == "groupchat":
            await self._groupchat(jid, body, msg_id)
            return
        if jid.domain != self.settings.domain or not jid.local:
            self._send(st.stanza_error("message", msg_id, "service-unavailable", from_=str(jid)))
            return
        await self._chat(jid, mtype, body, msg_id, message.find_text("thread") or "")

    def _chat_allowed_now(self, to: str, msg_id: str) -> bool:
        """Spend a token of the chat bucket: ``resource-constraint`` without one, and
        the stream's end when the refusals go on (a flood)."""
        verdict = self._chat_rate.take()
        if verdict is Verdict.SEND:
            return True
        if verdict is Verdict.FLOOD:
            log.info("XMPP %s keeps sending messages past the chat rate: stream ended", self.jid)
            raise StreamError("policy-violation", "too many messages")
        if self._chat_rate.strikes == 1:
            log.info("XMPP %s: message refused, over the chat rate", self.jid)
        self._send(
            st.stanza_error(
                "message",
                msg_id,
                "resource-constraint",
                "wait",
                from_=to,
                text="too many messages: slow down",
            )
        )
        return False

    async def _chat(self, jid: Jid, mtype: str, body: str, msg_id: str, thread: str) -> None:
        """A chat to ``user@domain[/resource]``: only to a contact who is online, with
        the sender the session's own JID."""
        user, resource = jid.local, jid.resource
        to_other_dialects = self.settings.chat_to_other_dialects
        if user != self.client.user:
            # the recipient's connections: each one's XMPP resource, None for another
            # protocol's; first from the contacts seen online here, else from presence
            targets = self._known_contact(user)
            if not self._deliverable(targets, mtype, resource):
                try:
                    targets = await self._present_contact(user)
                except Exception as exc:
                    log.warning("XMPP %s: cannot check the contacts of a chat: %s", self.jid, exc)
                    self._send(
                        st.stanza_error(
                            "message", msg_id, "internal-server-error", "wait", from_=jid.bare
                        )
                    )
                    return
            if not self._deliverable(targets, mtype, resource):
                # a non-contact and an offline contact get the same answer (RFC 6121
                # §8.5.2.2.1, no offline storage), which tells nothing of who exists
                log.info(
                    "XMPP %s: chat to %s refused: no connection of theirs in a contacts "
                    "channel shared with the sender (not a contact, or offline)",
                    self.jid,
                    jid,
                )
                self._send(
                    st.stanza_error("message", msg_id, "service-unavailable", from_=str(jid))
                )
                return
            if resource and resource not in targets:
                # no such resource online: a chat goes as if sent to the bare JID (RFC
                # 6121 §8.5.3.2.1; a normal message was not deliverable)
                resource = ""
        payload = chat_payload(self.jid, self.client.user, mtype, body, msg_id, thread, resource)
        dialects = [DIALECT] if resource or not to_other_dialects else None
        await self.hub.message_user(user, payload, dialects)

    def _deliverable(self, targets: list[str | None], mtype: str, resource: str) -> bool:
        """Whether a message reaches at least one of the recipient's ``targets``."""
        if resource and resource not in targets and mtype != "chat":
            return False  # a normal message to a resource not online (RFC 6121 §8.5.3.2.1)
        if self.settings.chat_to_other_dialects:
            return bool(targets)
        return any(target is not None for target in targets)

    def _known_contact(self, user: str) -> list[str | None]:
        """``user``'s connections among the contacts this session has seen online
        (cluster-wide joins and leaves of the contacts channels): no lookup. Trusted only
        while every contacts channel of the session sends joins and leaves."""
        subs = self.client.subs
        for channel in self.settings.contacts_channels(subs):
            if not subs[channel].join_leave:
                return []
        return [seen.resource for seen in self._contacts.values() if seen.user == user]

    async def _present_contact(self, user: str) -> list[str | None]:
        """``user``'s connections present in the session's contacts channels, read from
        the engine's presence (every node)."""
        channels = self.settings.contacts_channels(self.client.subs)
        return [xmpp_resource(info) for info in await present_contact(self.hub, channels, user)]

    async def _groupchat(self, jid: Jid, body: str, msg_id: str) -> None:
        room_jid = jid.bare
        channel = self._room_channel(jid.local) if jid.domain == self.settings.muc_domain else None
        if channel is None:
            self._send(st.stanza_error("message", msg_id, "item-not-found", from_=room_jid))
            return
        user = self.client.user
        # the publication's info names the publisher for every dialect; "from" and
        # "nick" stay in the data for readers of it, and are always the user's name
        data = orjson.dumps({"body": body, "from": user, "nick": user})
        try:
            await self.client.publish(channel, data)
        except HubError as error:
            condition = "forbidden" if error.code == 103 else "not-acceptable"
            self._send(
                st.stanza_error(
                    "message", msg_id, condition, "auth", from_=room_jid, text=error.message
                )
            )

    # --- ClientSink ---------------------------------------------------------------
    def push_publication(self, channel: str, pub: Publication) -> None:
        if self.phase != Phase.BOUND:
            return
        writer = self.writer
        data = pub.cache.get(self._key)
        if data is None:
            data = pub.cache[self._key] = writer.frame(self._publication_stanza(channel, pub))
        writer.write(data, (channel, pub.offset, pub.epoch) if pub.offset else None)

    def _publication_stanza(self, channel: str, pub: Publication) -> bytes:
        settings = self.settings
        room = settings.room_of(channel)
        if room is not None:
            try:
                value = orjson.loads(pub.data)
            except orjson.JSONDecodeError:
                value = None
            if isinstance(value, dict) and isinstance(value.get("body"), str):
                # the occupant is who published, as authenticated; never the data's
                # "nick" or "from", which any publisher may write. The server API's
                # publications (no publisher) come from the room itself.
                room_jid = f"{room}@{settings.muc_domain}"
                if pub.info is None or pub.info.user:
                    return st.chat_message(
                        f"{room_jid}/{pub.info.user}" if pub.info else room_jid,
                        value["body"],
                        type_="groupchat",
                        msg_id=str(pub.offset) if pub.offset else "",
                    )
        item_id = str(pub.offset) if pub.offset else ""
        return st.headline(settings.domain, channel, item_id, pub.data.decode())

    def push_join(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        if self.available and self.settings.is_contacts_channel(channel):
            self._contact_joined(channel, info, cache)

    def push_leave(self, channel: str, info: ClientInfo, cache: JoinCache) -> None:
        if self.settings.is_contacts_channel(channel):
            self._contact_left(channel, info, cache)

    def push_subscribe(self, channel: str, result: SubscribeResult) -> None:
        pass  # the publications that follow are what an XMPP client sees

    def push_unsubscribe(self, channel: str, code: int, reason: str) -> None:
        if self.settings.is_contacts_channel(channel):
            # no more joins and leaves from there: contacts seen only there are gone
            for client_id, seen in list(self._contacts.items()):
                seen.channels.discard(channel)
                if not seen.channels:
                    del self._contacts[client_id]
                    self._send(st.presence(seen.jid, type_="unavailable"))

    def push_message(self, data: bytes) -> None:
        if self.phase != Phase.BOUND:
            return
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict) and value.get("xmpp") == "chat":
            resource = value.get("resource")
            if resource and resource != self.resource:
                return
            self._send(
                st.chat_message(
                    str(value.get("from", "")),
                    str(value.get("body", "")),
                    type_="normal" if value.get("type") == "normal" else "chat",
                    msg_id=str(value.get("id") or ""),
                    thread=str(value.get("thread") or ""),
                )
            )
            return
        self._send(st.headline(self.settings.domain, "", "", data.decode(errors="replace")))

    def push_refresh(self, expires: bool, ttl: int) -> None:
        pass

    def send_ping(self) -> None:
        pass  # BOSH requests and the WebSocket's own pings show liveness

    def queued_bytes(self) -> int:
        return self.writer.queued_bytes()

    def close(self, disconnect: Disconnect) -> None:
        if not self.writer.closed:
            self.writer.end(disconnect_condition(disconnect), disconnect.reason)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def _valid_local(user: str) -> bool:
    """A user name usable as a JID localpart as it is (RFC 7622 forbids these)."""
    return not any(c in user for c in "\"&'/:<>@ ") and len(user) <= 1023
