"""What both servers share: SigV4 verification, serving (connection limits, listening, logging),
decimal parsing, private files and the AEAD primitives. Depends on neither ``gateway`` nor ``keyservice``."""
