"""Virtual BLE radio: bleak backends over bumble on an in-process link, plus simulated peripherals.

Typical test::

    async with VirtualRadio() as radio, ChestStrap(radio) as strap:
        device = await BleakScanner.find_device_by_name(
            strap.name, timeout=2, backend=BumbleScanner, bumble_radio=radio
        )
        async with BleakClient(device, backend=BumbleClient, bumble_radio=radio) as client:
            ...
"""

from simulators.radio.backend import BumbleClient, BumbleDeviceDetails, BumbleScanner
from simulators.radio.peripheral import (
    CONNECTION_TIMEOUT,
    REMOTE_USER_TERMINATED,
    CharacteristicSpec,
    Properties,
    ServiceSpec,
    SimulatedPeripheral,
    battery_service,
    device_information_service,
    normalize_uuid,
)
from simulators.radio.radio import VirtualRadio, make_static_address

__all__ = [
    "CONNECTION_TIMEOUT",
    "REMOTE_USER_TERMINATED",
    "BumbleClient",
    "BumbleDeviceDetails",
    "BumbleScanner",
    "CharacteristicSpec",
    "Properties",
    "ServiceSpec",
    "SimulatedPeripheral",
    "VirtualRadio",
    "battery_service",
    "device_information_service",
    "make_static_address",
    "normalize_uuid",
]
