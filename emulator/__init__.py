"""Local emulator of the providers' APIs (see `emulator.server`)."""

from emulator.server import Emulator, Fault

__all__ = ["Emulator", "Fault"]
