"""Record schemas, one module per topic family. Every record carries a schema version ``v``."""
