"""Device profiles and machine detection (torch-free).

from edgead.devices import load_profile, profile_export_settings, detect_machine
"""

from edgead.devices.detect import (
    BackendProbe,
    MachineInfo,
    detect_machine,
    match_profile,
    probe_backends,
)
from edgead.devices.profiles import (
    BackendPreference,
    DeviceProfile,
    ProfileMatch,
    list_profiles,
    load_all_profiles,
    load_profile,
    profile_export_settings,
)

__all__ = [
    "BackendPreference",
    "BackendProbe",
    "DeviceProfile",
    "MachineInfo",
    "ProfileMatch",
    "detect_machine",
    "list_profiles",
    "load_all_profiles",
    "load_profile",
    "match_profile",
    "probe_backends",
    "profile_export_settings",
]
