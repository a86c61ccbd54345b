"""STOMP 1.0-1.2: the codec, destination mapping and the session that drives the hub."""
