"""gridwatch.devices: code tables, grid map, device registry, sample city generator and fleet simulator.

Typical use::

    from gridwatch.devices import load_city, Fleet, Publisher
    city = load_city()                       # shipped sample city (devices/data/sample-city)
    city.gridmap.locate(30.27, 120.15)       # -> grid code
    city.registry.get("3301020150000001")    # -> Device
    Publisher(Fleet(city.registry, seed=7)).run("127.0.0.1", 1883, start_ts=time.time())

File formats and code standards: docs/devices.md.
"""

from .gridmap import Area, GridMap, GridMapError
from .registry import City, Device, Registry, RegistryError, load_city
from .simulator import Fault, Fleet, Publisher, PublishStats

__all__ = [
    "Area", "GridMap", "GridMapError", "City", "Device", "Registry", "RegistryError", "load_city",
    "Fault", "Fleet", "Publisher", "PublishStats",
]
