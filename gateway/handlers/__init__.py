"""The S3 operation handlers: objects (encrypting PUT, decrypting GET/HEAD), listings, pass-through."""
