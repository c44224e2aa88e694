"""The HTTP service: ``avrec serve`` runs :func:`avrec.service.app.create_app` under uvicorn."""
