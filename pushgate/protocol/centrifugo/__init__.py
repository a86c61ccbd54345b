"""The Centrifugo client protocol v2, JSON form (centrifuge-js, centrifuge-python)."""
