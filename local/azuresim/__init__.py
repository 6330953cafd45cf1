"""A local simulator of the Microsoft identity platform, Microsoft Graph (mail, subscriptions,
change notifications) and Key Vault secrets, served over HTTPS with a test CA.

See ``local/README.md`` for the contract. Start it with ``python -m local.azuresim --data-dir DIR``
or, from Python, with :func:`local.azuresim.runner.start_simulator`.
"""
