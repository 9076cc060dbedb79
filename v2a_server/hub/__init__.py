"""Installing named models: where their files come from (``manifest``), fetching and checking
them (``fetch``), and converting them into an installed pipeline folder (``install``).

Used by ``v2a model pull|list|remove``; ``v2a_server.model_store`` finds installed models by name.
"""
