"""The Flower apps and their mods: what runs on the server and on every client."""
