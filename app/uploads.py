"""File inputs that take uploads only.

Gradio's file components accept a link in place of an upload and download it on the server (guarded against
private addresses, but still a fetch of whatever a request names). A public kiosk has no business fetching
for strangers: on the components wrapped here, a link is refused before any connection is made. Paths that
are not uploads to this app are already refused by Gradio, and again by `AppFiles.claim`.
"""

from __future__ import annotations

import gradio as gr
from gradio_client.utils import is_http_url_like

LINKS_REFUSED = "links are not fetched: upload the file itself"


def uploads_only(component: gr.components.Component) -> gr.components.Component:
    """`component`, made to refuse a link given instead of a file (returned, for use inline)."""
    move_to_cache = component.async_move_resource_to_block_cache

    async def refuse_links(url_or_file_path):
        if url_or_file_path is not None and is_http_url_like(str(url_or_file_path)):
            raise gr.Error(LINKS_REFUSED)
        return await move_to_cache(url_or_file_path)

    component.async_move_resource_to_block_cache = refuse_links
    return component
