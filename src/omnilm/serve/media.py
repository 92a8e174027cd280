"""OpenAI content parts → omnilm content parts with decoded, size-checked media.

Data URLs are always accepted. http(s) URLs are fetched only when remote media is allowed, from hosts on
the allow-list, and only when every address the host resolves to is public (never loopback, private,
link-local, multicast or reserved); the connection goes to the checked address, so a second DNS answer
cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

from omnilm.errors import MediaError
from omnilm.media import decode_data_url, load_audio, load_image, load_video
from omnilm.serve.errors import APIError
from omnilm.serve.settings import ServeSettings

logger = logging.getLogger(__name__)

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
PART_KINDS = {"image_url": "image", "input_audio": "audio", "video_url": "video", "video": "video"}


class MediaConverter:
    """Turns the messages of one request into omnilm messages, enforcing the server's media limits."""

    def __init__(self, settings: ServeSettings, modalities: tuple[str, ...], video_frames: int | None) -> None:
        self.settings, self.modalities, self.video_frames = settings, modalities, video_frames

    def messages(self, messages: list) -> list[dict]:
        """omnilm messages from validated ChatMessage models; raises APIError(400/413) on bad media."""
        total = sum(1 for m in messages if isinstance(m.content, list) for p in m.content
                    if isinstance(p, dict) and p.get("type") in PART_KINDS)
        if total > self.settings.max_media_items:
            raise APIError(400, f"the request holds {total} media items; this server takes at most "
                                f"{self.settings.max_media_items} per request", param="messages")
        out = []
        for index, message in enumerate(messages):
            role = "system" if message.role == "developer" else message.role
            content = message.content if message.content is not None else ""
            if isinstance(content, list):
                content = [self._part(part, index, role) for part in content]
            out.append({"role": role, "content": content})
        return out

    def _part(self, part: dict, index: int, role: str) -> dict:
        kind = part.get("type")
        where = f"messages[{index}]"
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise APIError(400, f"{where}: a text part needs a 'text' string", param=where)
            return {"type": "text", "text": part["text"]}
        if kind not in PART_KINDS:
            raise APIError(400, f"{where}: unknown content part type {kind!r}; use text, image_url, input_audio "
                                "or video_url", param=where)
        modality = PART_KINDS[kind]
        if role != "user":
            raise APIError(400, f"{where}: only user messages may carry media ({modality} in a {role} message)")
        if modality not in self.modalities:
            takes = ", ".join(self.modalities) or "text only"
            raise APIError(400, f"{where}: this model does not take {modality} input; it takes {takes}", param=where)
        try:
            if modality == "image":
                return {"type": "image", "image": self._image(self._url(part, kind, where))}
            if modality == "audio":
                return {"type": "audio", "audio": self._audio(part.get("input_audio"), where)}
            return {"type": "video", "video": self._video(self._url(part, kind, where))}
        except MediaError as err:
            raise APIError(400, f"{where}: {err}", param=where) from None

    # One kind each ------------------------------------------------------------------------------
    def _image(self, url: str):
        return load_image(self._bytes(url, "image"), max_pixels=self.settings.max_image_pixels)

    def _audio(self, value: Any, where: str) -> tuple:
        if not isinstance(value, dict) or not isinstance(value.get("data"), str):
            raise APIError(400, f"{where}: input_audio needs {{'data': base64 string, 'format': 'wav'}}", param=where)
        fmt = str(value.get("format", "")).lower()
        if fmt not in AUDIO_FORMATS:
            raise APIError(400, f"{where}: audio format {value.get('format')!r} is not supported; "
                                f"send one of {', '.join(AUDIO_FORMATS)}", param=where)
        try:
            data = base64.b64decode(value["data"], validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, f"{where}: input_audio data is not valid base64", param=where) from None
        samples = load_audio(data, max_seconds=self.settings.max_audio_seconds)
        return samples, 16_000  # load_audio resamples to 16 kHz

    def _video(self, url: str) -> list:
        if self.video_frames is None:
            raise MediaError("this model has no video support")
        return load_video(self._bytes(url, "video"), num_frames=self.video_frames,
                          max_pixels=self.settings.max_image_pixels, max_frames_decoded=self.settings.max_video_frames)

    @staticmethod
    def _url(part: dict, kind: str, where: str) -> str:
        value = part.get(kind)
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise APIError(400, f"{where}: the {kind} part needs {{'url': 'data:...;base64,...'}}", param=where)
        return url

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
