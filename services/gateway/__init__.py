"""The Axon gateway: one HTTP front door (Open Inference Protocol v2 + task endpoints)
that validates requests, queues them in Redis and waits for the model workers' replies.

``python -m services.gateway`` serves it with uvicorn; ``create_app`` builds the app.
"""
