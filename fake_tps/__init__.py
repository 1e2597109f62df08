"""The bundled fake TPS server, on the tpsharness kernel."""
