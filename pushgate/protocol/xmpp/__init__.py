"""XMPP dialect: a hardened XML codec, the stanza session, and BOSH's state machine."""
