"""Which adapter backs each seam of the core, chosen from :class:`parley.settings.Settings`: the
factories (``factory.py``), the clients a process opens once (``clients.py``), and the Azure
adapters (Service Bus, Blob Storage, Azure OpenAI embeddings). The core holds the seams and the
local adapters and never imports this package; the services, maintenance and the CLI do."""
