"""The web console at ``/ui``: a page of plain HTML/JS/CSS served by the gateway itself
(``assets``, ``static/``), the JSON it polls (``fleet``: ``GET /v1/fleet``) and the
dead-letter admin API (``dead_letters``). ``routes`` joins their routes for the app's
route table; docs/console.md describes what the page shows."""
