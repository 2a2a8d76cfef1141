"""The command line: `parley up | ingest | status | search | ask | dlq | doctor | schemas | token`,
and the local stack it runs. It sits on top of everything else and may import any service."""
