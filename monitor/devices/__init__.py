"""BLE wearables: GATT codecs and the connector that turns notifications into readings."""
