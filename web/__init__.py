"""Web door: pages, JSON API, routing API and socket.io on aiohttp."""
