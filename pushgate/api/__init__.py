"""The server API the product's backend calls: HTTP (Centrifugo-compatible)."""
