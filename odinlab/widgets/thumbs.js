// Shared by the card views (clusters, pairs, compare, units); Python puts this file before each view's
// module (cards.esm_with_thumbs), so a function here is in scope there.
// A "thumbs" message carries a page of PNG thumbnails, in the order of the view's <img> elements: each is
// shown through an object URL, kept in `urls` so the view revokes them when it is removed. A message for an
// older version of the view (its items changed since it was asked) is ignored.
function placeThumbs(model, container, selector, urls, content, buffers) {
  if (!content || content.kind !== "thumbs" || content.version !== model.get("version")) return;
  const imgs = container.querySelectorAll(selector);
  (buffers || []).forEach((png, i) => {
    if (!imgs[i]) return;
    const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
    urls.push(url);
    imgs[i].src = url;
  });
}

