"""The console's routes, for the app's route table: the page and its files
(``assets``), ``GET /v1/fleet`` (``fleet``) and the dead-letter API
(``dead_letters``)."""

from __future__ import annotations

from services.gateway.console import assets, dead_letters, fleet

routes = [*assets.routes, *fleet.routes, *dead_letters.routes]
