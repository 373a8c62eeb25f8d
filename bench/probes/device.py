"""The one device resolver: a device text as the user types it (cpu, cuda, cuda:N, auto) to a torch.device,
or a ValueError that says why it cannot run here."""
from __future__ import annotations

import torch


def resolve_device(text: str, flag: str = "--device", pin: bool = False) -> torch.device:
    """`auto` takes a GPU where torch sees one. `pin`: a bare "cuda" becomes the current GPU's index, so a
    record names which GPU ran. `flag` is the option the error names."""
    if text == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(text)
        except RuntimeError:
            raise ValueError(f"{flag}: not a device: {text!r} (cpu, cuda, cuda:N or auto)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{flag}: {text!r} is not supported (cpu, cuda, cuda:N or auto)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {text} asked for, but this torch ({torch.__version__}) sees no CUDA GPU "
                             f"(torch.cuda.is_available() is False): use cpu, or auto to take a GPU only where "
                             f"there is one")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {text}: torch sees {torch.cuda.device_count()} CUDA device(s)")
        if pin and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    return device
