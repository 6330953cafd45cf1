"""A local stand-in for the Azure Functions host (Core Tools cannot be installed offline).

It runs a Python v2-model app (``function_app.py``) from its own binding metadata: HTTP triggers,
queue triggers and queue output bindings on a storage account (Azurite), timer triggers, the admin
API; ``local.settings.json``, host.json and ``AzureFunctionsJobHost__`` overrides. See local/README.md.
"""
