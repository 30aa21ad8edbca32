"""smartosctl: maintain a SmartOS device over ssh. Runs on the device; never imports the builder."""

__version__ = "0.1.0"
