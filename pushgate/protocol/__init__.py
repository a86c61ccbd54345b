"""Dialects: sans-I/O codecs and the sessions that drive the hub with them."""
