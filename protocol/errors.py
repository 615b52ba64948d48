class ProtocolError(ValueError):
    """Bytes that are not a valid message. Decoding raises nothing else."""
