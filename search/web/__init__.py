"""The merchandiser's web app, served by the API's Flask app: search by photo, see the garments,
filter, and run the catalog (admin). Server-rendered pages and small scripts; nothing is fetched
from the internet (see :mod:`search.web.pages`)."""
