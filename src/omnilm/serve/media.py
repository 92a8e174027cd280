"""Request content parts (read by `omnilm.chat.parse_part`) → omnilm parts with decoded, size-checked media.

Data URLs are always accepted. http(s) URLs are fetched only when remote media is allowed, from hosts on
the allow-list, and only when every address the host resolves to is public (never loopback, private,
link-local, multicast or reserved); the connection goes to the checked address, so a second DNS answer
cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from omnilm.chat import PART_TYPES, parse_part
from omnilm.errors import MediaError, OmniError
from omnilm.media import decode_data_url, load_audio, load_image, load_video
from omnilm.serve.errors import APIError
from omnilm.serve.settings import ServeSettings

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")


class MediaConverter:
    """Turns the messages of one request into omnilm messages, enforcing the server's media limits."""

    def __init__(self, settings: ServeSettings, modalities: tuple[str, ...], video_frames: int | None) -> None:
        self.settings, self.modalities, self.video_frames = settings, modalities, video_frames

    def messages(self, messages: list) -> list[dict]:
        """omnilm messages from validated ChatMessage models; raises APIError(400/413) on bad media."""
        total = sum(1 for m in messages if isinstance(m.content, list) for p in m.content
                    if isinstance(p, dict) and PART_TYPES.get(p.get("type"), "text") != "text")
        if total > self.settings.max_media_items:
            raise APIError(400, f"the request holds {total} media items; this server takes at most "
                                f"{self.settings.max_media_items} per request", param="messages")
        out = []
        for index, message in enumerate(messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content if message.content is not None else ""
            if isinstance(content, list):
                content = [self._part(part, f"messages[{index}]", role) for part in content]
            out.append({"role": role, "content": content})
        return out

    def _part(self, part: dict, where: str, role: str) -> dict:
        try:
            modality, value = parse_part(part, where)
        except OmniError as err:
            raise APIError(400, str(err), param=where) from None
        if modality == "text":
            return {"type": "text", "text": value}
        if role != "user":
            raise APIError(400, f"{where}: only user messages may carry media ({modality} in a {role} message)")
        if modality not in self.modalities:
            takes = ", ".join(self.modalities) or "text only"
            raise APIError(400, f"{where}: this model does not take {modality} input; it takes {takes}", param=where)
        if part["type"] == "input_audio":
            fmt = str(part["input_audio"].get("format", "")).lower()
            if fmt not in AUDIO_FORMATS:
                raise APIError(400, f"{where}: audio format {part['input_audio'].get('format')!r} is not supported; "
                                    f"send one of {', '.join(AUDIO_FORMATS)}", param=where)
        elif not isinstance(value, str):
            raise APIError(400, f"{where}: the {modality} part needs a URL ('data:...;base64,...')", param=where)
        try:
            data = value if isinstance(value, bytes) else self._bytes(value, modality)
            return {"type": modality, modality: self._load(modality, data)}
        except MediaError as err:
            raise APIError(400, f"{where}: {err}", param=where) from None

    def _load(self, modality: str, data: bytes):
        """The decoded item, within the server's limits."""
        limits = self.settings
        if modality == "image":
            return load_image(data, max_pixels=limits.max_image_pixels)
        if modality == "audio":
            return load_audio(data, max_seconds=limits.max_audio_seconds), 16_000  # load_audio resamples to 16 kHz
        if self.video_frames is None:
            raise MediaError("this model has no video support")
        return load_video(data, num_frames=self.video_frames, max_pixels=limits.max_image_pixels,
                          max_frames_decoded=limits.max_video_frames)

    def _bytes(self, url: str, kind: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_url(url)
        if not url.lower().startswith(("http://", "https://")):
            raise APIError(400, f"{kind} URL must be a data URL or http(s); got {url[:40]!r}")
        if not self.settings.allow_remote_media:
            raise APIError(400, f"remote {kind} URLs are disabled on this server; send the {kind} as a data URL "
                                "(the server admin can enable --allow-remote-media)")
        return fetch_remote(url, self.settings)


def fetch_remote(url: str, settings: ServeSettings) -> bytes:
    """GET `url` from an allowed public host, at most `max_body_bytes`; APIError(400) otherwise."""
    import httpx

    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    if host not in settings.allowed_hosts:
        raise APIError(400, f"media host {host!r} is not on this server's allow-list")
    address = public_address(host, parts.port or (443 if parts.scheme == "https" else 80))
    netloc = f"[{address}]" if ":" in address else address
    target = parts._replace(netloc=f"{netloc}:{parts.port}" if parts.port else netloc).geturl()
    headers = {"Host": parts.netloc.rpartition("@")[2]}
    try:
        with httpx.Client(timeout=settings.remote_timeout, follow_redirects=False) as client:
            with client.stream("GET", target, headers=headers, extensions={"sni_hostname": host}) as response:
                if response.status_code != 200:
                    raise APIError(400, f"fetching {url[:80]} gave HTTP {response.status_code} (redirects are "
                                        "not followed)")
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > settings.max_body_bytes:
                        raise APIError(413, f"the media at {url[:80]} is over {settings.max_body_bytes} bytes")
                return bytes(body)
    except httpx.HTTPError as err:
        raise APIError(400, f"could not fetch {url[:80]}: {err}") from None


def public_address(host: str, port: int) -> str:
    """The first address of `host`, after checking that every address it resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise APIError(400, f"media host {host!r} does not resolve: {err}") from None
    addresses = [info[4][0].split("%")[0] for info in infos]
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            raise APIError(400, f"media host {host!r} resolves to {address}, a loopback, private, link-local or "
                                "reserved address; such URLs are never fetched")
    if not addresses:
        raise APIError(400, f"media host {host!r} has no address")
    return addresses[0]
