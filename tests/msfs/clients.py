"""Upload requests byte for byte as TeamTalk's clients build them (mogujie/TeamTalk).

* Android, ``android/app/src/main/java/com/mogujie/tt/utils/MoGuHttpClient.java``
  ``uploadImage3``: HttpURLConnection POST to the msfs URL itself, fixed
  boundary ``---------7d4a6d158c9``, one part ``name="file0"`` with
  ``filename`` the picture's file name and ``Content-Type:application/octet-stream``
  (no space), then the bytes, ``\\r\\n``, and ``\\r\\n--boundary--\\r\\n``; it
  reads ``url`` from the JSON reply.
* iOS, ``ios/TeamTalk/Module/TCPAPI/RequestAPI/Msg/DDSendPhotoMessageAPI.m``
  (and macOS ``mac/TeamTalk/modules/Chatting/DDImageUploader.m``):
  AFNetworking multipart POST to the msfs URL, a field ``type=im_image``,
  then ``name="image"; filename="image.png_<w>x<h>.png"``, ``image/jpeg``
  whatever the picture is; AFNetworking's boundary ``Boundary+%08X%08X`` and
  framing (``--B\\r\\n`` first, ``\\r\\n--B\\r\\n`` between, ``\\r\\n--B--\\r\\n``
  last); it accepts only a ``text/html`` reply, checks HTTP 200 and
  ``error_code`` == 0, then uses ``url``.
* Windows, ``win-client/src/Modules/Session/Operation/SendImgHttpOperation.cpp``
  with ``win-client/3rdParty/src/http/httpclient/http_request.cpp`` and
  ``http_client.cpp``: POST to ``<msfs URL>upload/``, boundary
  ``----__<14 alphanumerics>``, ``name="image"; filename="<file>_<w>x<h>.<ext>"``,
  ``Content-Type: image/.<ext>`` (the extension with its dot), bytes,
  ``\\r\\n--boundary--\\r\\n``; it downloads from ``<msfs URL> + path``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Request:
    target: str  # the request target (path) the client posts to
    headers: list[tuple[str, str]]
    body: bytes

    def raw(self, host: str) -> bytes:
        lines = [f"POST {self.target} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


ANDROID_BOUNDARY = "---------7d4a6d158c9"
ANDROID_HEADERS = [
    ("connection", "Keep-Alive"),
    ("user-agent", "Mozilla/4.0 (compatible; MSIE 6.0; Windows NT 5.1; SV1)"),
    ("Charsert", "UTF-8"),
    ("Content-Type", f"multipart/form-data; boundary={ANDROID_BOUNDARY}"),
]


def android_framing(filename: str = "IMG_20141012_101010.jpg") -> tuple[bytes, bytes]:
    """What Android writes before the picture's bytes, and after them."""
    head = (
        f"--{ANDROID_BOUNDARY}\r\n"
        f'Content-Disposition: form-data;name="file0";filename="{filename}"\r\n'
        "Content-Type:application/octet-stream\r\n\r\n"
    )
    return head.encode(), b"\r\n" + f"\r\n--{ANDROID_BOUNDARY}--\r\n".encode()


def android(picture: bytes, filename: str = "IMG_20141012_101010.jpg") -> Request:
    head, tail = android_framing(filename)
    return Request("/", ANDROID_HEADERS, head + picture + tail)


def ios(picture: bytes, width: int = 640, height: int = 480) -> Request:
    boundary = "Boundary+5A3C9E1F0B7D2468"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="type"\r\n\r\n'
        "im_image"
        f"\r\n--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="image.png_{width}x{height}.png"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    body += picture + f"\r\n--{boundary}--\r\n".encode()
    headers = [
        ("Accept-Language", "zh-Hans;q=1, en;q=0.9"),
        ("User-Agent", "TeamTalk/1.0 (iPhone; iOS 8.1; Scale/2.00)"),
        ("Content-Type", f"multipart/form-data; boundary={boundary}"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
    ]
    return Request("/", headers, body)


def windows(picture: bytes, filename: str = "shot.jpg", width: int = 800, height: int = 600) -> Request:
    boundary = "----__aZ3kQ9mP2xL7wB"
    ext = filename.rsplit(".", 1)[1]
    body = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}_{width}x{height}.{ext}"\r\n'
        f"Content-Type: image/.{ext}\r\n"
        "\r\n"
    ).encode()
    body += picture + b"\r\n" + f"--{boundary}--\r\n".encode()
    headers = [
        ("accept", "*/*"),
        ("connection", "Keep-Alive"),
        ("Content-Type", f"multipart/form-data; boundary={boundary}"),
    ]
    return Request("/upload/", headers, body)


def jpeg(size: int, seed: int = 7) -> bytes:
    """A JPEG-shaped blob of ``size`` bytes: SOI marker, filler, EOI marker."""
    import random

    filler = random.Random(seed).randbytes(max(0, size - 6))
    return b"\xff\xd8\xff\xe0" + filler + b"\xff\xd9"


def png(size: int = 300) -> bytes:
    """PNG-shaped: signature, filler, the IEND chunk every PNG ends with."""
    return b"\x89PNG\r\n\x1a\n" + b"\x00" * max(0, size - 20) + b"\x00\x00\x00\x00IEND\xaeB`\x82"
