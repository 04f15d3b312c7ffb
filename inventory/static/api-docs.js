// Start Swagger UI on the app's OpenAPI document (same origin; nothing from another site).
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,          // never the public validator service
    persistAuthorization: false, // a pasted token is not kept in the browser
    docExpansion: "list",
    defaultModelsExpandDepth: 0
  });
});
