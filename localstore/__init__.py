"""LocalStore: local-first storage for blueprints."""
