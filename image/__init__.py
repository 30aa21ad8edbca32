"""SmartOS image builder: turns Debian, Ansible roles and overlays into flashable images."""

__version__ = "0.1.0"
