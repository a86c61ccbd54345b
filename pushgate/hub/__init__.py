"""The hub: clients, user sessions, channels, permissions, presence and recovery."""
