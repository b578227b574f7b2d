"""Prose, captions and text metrics of the sample mini-crawl.

Everything here is pure (takes a ``random.Random``) so that the same seed always
gives the same text. English prose is built from a small phrase grammar
(opener + subject + verb phrase + object + tail) plus hand-written standalone
sentences; phrases are drawn *without replacement* within a page so that a page
has (almost) no repeated word 5-grams or character 10-grams and passes the
OBELICS repetition filters. Filler prose never names a colour or a shape, so the
only sentence near an image that does is the one describing it (a clean target
for MMC4-style image-to-sentence assignment).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

# --------------------------------------------------------------------------- concept space

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "cross"]
SHAPE_PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
                 "hexagon": "hexagons", "cross": "crosses"}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
BACKGROUNDS = ["white", "black", "grey", "beige"]
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


def letter_word(i: int) -> str:
    """A distinct all-letter word per integer (a, b, ..., z, aa, ab, ...): synthetic vocabularies
    for dedup tests and benches (digits would all normalise to "0" in dedup's text key)."""
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(97 + r) + s
    return s

# Translations used by the non-English pages (alt texts and describing sentences).
_FOREIGN = {
    "fr": {
        "count": {1: "un", 2: "deux", 3: "trois", 4: "quatre"},
        "shape": {"circle": ("cercle", "cercles"), "square": ("carré", "carrés"),
                  "triangle": ("triangle", "triangles"), "star": ("étoile", "étoiles"),
                  "hexagon": ("hexagone", "hexagones"), "cross": ("croix", "croix")},
        "colour": {"red": ("rouge", "rouges"), "green": ("vert", "verts"), "blue": ("bleu", "bleus"),
                   "yellow": ("jaune", "jaunes"), "purple": ("violet", "violets"),
                   "orange": ("orange", "orange")},
        "bg": {"white": "blanc", "black": "noir", "grey": "gris", "beige": "beige"},
    },
    "de": {
        "count": {1: "ein", 2: "zwei", 3: "drei", 4: "vier"},
        "shape": {"circle": ("Kreis", "Kreise"), "square": ("Quadrat", "Quadrate"),
                  "triangle": ("Dreieck", "Dreiecke"), "star": ("Stern", "Sterne"),
                  "hexagon": ("Sechseck", "Sechsecke"), "cross": ("Kreuz", "Kreuze")},
        "colour": {"red": ("roter", "rote"), "green": ("grüner", "grüne"), "blue": ("blauer", "blaue"),
                   "yellow": ("gelber", "gelbe"), "purple": ("violetter", "violette"),
                   "orange": ("oranger", "orange")},
        "bg": {"white": "weißem", "black": "schwarzem", "grey": "grauem", "beige": "beigem"},
    },
    "es": {
        "count": {1: "un", 2: "dos", 3: "tres", 4: "cuatro"},
        "shape": {"circle": ("círculo", "círculos"), "square": ("cuadrado", "cuadrados"),
                  "triangle": ("triángulo", "triángulos"), "star": ("estrella", "estrellas"),
                  "hexagon": ("hexágono", "hexágonos"), "cross": ("cruz", "cruces")},
        "colour": {"red": ("rojo", "rojos"), "green": ("verde", "verdes"), "blue": ("azul", "azules"),
                   "yellow": ("amarillo", "amarillos"), "purple": ("morado", "morados"),
                   "orange": ("naranja", "naranjas")},
        "bg": {"white": "blanco", "black": "negro", "grey": "gris", "beige": "beige"},
    },
}


@dataclass(frozen=True)
class Scene:
    """What a content image shows: ``count`` objects of one ``shape`` and one ``colour``."""

    shape: str
    colour: str
    count: int
    background: str

    @property
    def noun(self) -> str:
        return self.shape if self.count == 1 else SHAPE_PLURALS[self.shape]

    @property
    def caption(self) -> str:
        """The canonical true caption, e.g. ``three red circles on a white background``."""
        return f"{COUNT_WORDS[self.count]} {self.colour} {self.noun} on a {self.background} background"

    def to_dict(self) -> dict:
        return {"shape": self.shape, "colour": self.colour, "count": self.count,
                "background": self.background, "caption": self.caption}


def random_scene(rng: random.Random) -> Scene:
    return Scene(rng.choice(SHAPES), rng.choice(COLOURS), rng.randint(1, 4), rng.choice(BACKGROUNDS))


def different_scene(rng: random.Random, scene: Scene) -> Scene:
    """A scene that differs from ``scene`` in both shape and colour: the source of a *wrong* caption."""
    while True:
        other = random_scene(rng)
        if other.colour != scene.colour and other.shape != scene.shape:
            return other


_CAPTION_TEMPLATES = [
    "{count} {colour} {noun} on a {bg} background",
    "{Count} {colour} {noun} on a {bg} background.",
    "a {bg} background with {count} {colour} {noun}",
    "{count_num} {colour} {noun} against a {bg} backdrop",
    "an image of {count} {colour} {noun} on {bg}",
    "a picture showing {count} {colour} {noun} on a plain {bg} background",
    "{Count} {noun}, all of them {colour}, on a {bg} background",
    "there are {count} {colour} {noun} on a {bg} background",
    "{count} {colour} {noun} placed on a {bg} surface",
    "a simple drawing of {count} {colour} {noun} on {bg}",
    "{Count} {colour} {noun} set against {bg}",
    "illustration: {count} {colour} {noun}, {bg} background",
]


def _count_phrase(rng: random.Random, count: int) -> str:
    if count == 1:
        return rng.choice(["one", "a single", "a", "one"])
    return COUNT_WORDS[count]


def caption_variant(rng: random.Random, scene: Scene) -> str:
    """A correct caption in varied wording (always names count, colour, shape and background)."""
    tmpl = rng.choice(_CAPTION_TEMPLATES)
    count = _count_phrase(rng, scene.count)
    if count == "a" and scene.colour == "orange":
        count = "an"
    text = tmpl.format(count=count, Count=count.capitalize(), count_num=str(scene.count) if scene.count > 1 else "one",
                       colour=scene.colour, noun=scene.noun, bg=scene.background)
    return text


def caption_variants(rng: random.Random, scene: Scene, k: int = 5) -> list[str]:
    """``k`` distinct correct captions (the canonical one first)."""
    out = [scene.caption]
    tries = 0
    while len(out) < k and tries < 200:
        tries += 1
        c = caption_variant(rng, scene)
        if c.lower().rstrip(".") not in {o.lower().rstrip(".") for o in out}:
            out.append(c)
    return out


_DESCRIBE_TEMPLATES = [
    "The photograph below shows {count} {colour} {noun} on a {bg} background.",
    "In the next picture you can see {count} {colour} {noun} resting on a {bg} background.",
    "Here is the piece we liked most: {count} {colour} {noun} on a {bg} background.",
    "One of the entries was a card with {count} {colour} {noun} printed on a {bg} background.",
    "The image that follows has {count} {colour} {noun} against a {bg} background.",
    "Below, {count} {colour} {noun} stand out on a {bg} background.",
    "Our photographer captured {count} {colour} {noun} laid out on a {bg} background.",
    "A simple example: {count} {colour} {noun} on a {bg} background.",
    "The following image contains {count} {colour} {noun} on a {bg} background.",
    "This next sheet shows {count} {colour} {noun} drawn on a {bg} background.",
    "You can see {count} {colour} {noun} on a {bg} background in the picture below.",
    "The last panel has {count} {colour} {noun} on a {bg} background.",
]


def describe_sentence(rng: random.Random, scene: Scene, used: set[int] | None = None) -> str:
    """A prose sentence naming the scene's count, colour, shape and background."""
    idx = list(range(len(_DESCRIBE_TEMPLATES)))
    if used is not None:
        free = [i for i in idx if i not in used] or idx
        i = rng.choice(free)
        used.add(i)
    else:
        i = rng.choice(idx)
    count = "a single" if scene.count == 1 else COUNT_WORDS[scene.count]
    return _DESCRIBE_TEMPLATES[i].format(count=count, colour=scene.colour, noun=scene.noun, bg=scene.background)


def foreign_caption(lang: str, scene: Scene) -> str:
    t = _FOREIGN[lang]
    n = scene.count
    shape = t["shape"][scene.shape][0 if n == 1 else 1]
    colour = t["colour"][scene.colour][0 if n == 1 else 1]
    count = t["count"][n]
    bg = t["bg"][scene.background]
    if lang == "fr":
        if n == 1 and scene.shape in ("star", "cross"):
            count, colour = "une", {"vert": "verte", "bleu": "bleue", "violet": "violette"}.get(colour, colour)
        return f"{count} {shape} {colour} sur un fond {bg}"
    if lang == "de":
        if n == 1:
            if scene.shape in ("square", "triangle", "hexagon", "cross"):  # neuter
                colour = colour[:-1] + "s" if colour.endswith("er") else colour
            return f"{count} {colour} {shape} auf {bg} Hintergrund"
        return f"{count} {colour} {shape} auf {bg} Hintergrund"
    if lang == "es":
        if scene.shape in ("star", "cross"):
            count = "una" if n == 1 else count
            colour = {"rojo": "roja", "rojos": "rojas", "amarillo": "amarilla", "amarillos": "amarillas",
                      "morado": "morada", "morados": "moradas"}.get(colour, colour)
        return f"{count} {shape} {colour} sobre un fondo {bg}"
    raise ValueError(lang)


def foreign_describe(lang: str, scene: Scene) -> str:
    cap = foreign_caption(lang, scene)
    return {"fr": "Sur la photo suivante, on voit {}.", "de": "Auf dem nächsten Bild sieht man {}.",
            "es": "En la siguiente foto se ven {}."}[lang].format(cap)


BOILERPLATE_ALTS = ["image", "click here", "IMG_2041.jpg", "photo", "untitled", "DSC00123.JPG",
                    "picture", "img", "thumbnail", "image001.png"]

# --------------------------------------------------------------------------- English prose

_OPENERS = [
    "In recent years, ", "According to the organisers, ", "For most of the afternoon, ",
    "As many readers already know, ", "Perhaps surprisingly, ", "Later that week, ",
    "By the end of the season, ", "At first glance, ", "In practice, ", "Over the past decade, ",
    "When we visited in the spring, ", "To nobody's surprise, ", "After a long debate, ",
    "On a quiet Tuesday morning, ", "Despite the rain, ", "Without much fuss, ",
    "Every so often, ", "Back in the early days, ", "Even so, ", "For what it is worth, ",
    "Once the tables were cleared, ", "As it turns out, ", "In the meantime, ",
    "Just before the holidays, ", "With a little patience, ", "More often than not, ",
    "If the old photographs are any guide, ", "During the first workshop, ",
    "On the other hand, ", "Looking back on it now, ", "To be fair, ", "Within a few weeks, ",
]
_SUBJECTS = [
    "the local art teacher", "a small group of volunteers", "our editor", "the museum staff",
    "many parents", "the workshop leader", "a retired engineer from the village",
    "the students in the back row", "the designers we spoke to", "visitors to the gallery",
    "the school board", "most of the children", "a printer in the old town",
    "the festival committee", "one of our readers", "the city council", "my neighbour",
    "the youngest member of the club", "a visiting professor", "the librarian",
    "two friends from college", "the owner of the corner shop", "a team of graduate students",
    "the author of the report", "her grandmother", "the head of the department",
    "an architect from the coast", "the weekend class", "the people who run the market",
    "a carpenter with thirty years of experience", "the new intern", "the organisers",
    "our photographer", "a primary school in the north", "the local historian",
    "the panel of judges", "several families on our street", "the bookshop across the road",
    "a quiet student named Sam", "the maths club",
]
_VERBS = [
    "spent several hours studying", "has argued for years about", "decided to rebuild",
    "was asked to explain", "took a closer look at", "kept coming back to", "tried to simplify",
    "has been collecting", "likes to talk about", "wrote a short note about",
    "spent the morning sorting", "carefully measured", "talked at length about",
    "did not expect much from", "still remembers", "quietly improved", "was impressed by",
    "asked us about", "made a careful record of", "could not stop thinking about",
    "put together", "set out to document", "borrowed", "repaired", "photographed",
    "gave a short talk on", "helped to organise", "was curious about", "found a new use for",
    "agreed to lend us", "has written a book about", "rearranged", "recommended",
    "compared notes on", "drew up plans for", "patiently restored", "shared stories about",
    "took apart", "laughed about", "returned to",
]
_OBJECTS = [
    "the old wooden puzzles", "a set of hand-painted tiles", "the new classroom posters",
    "the patterns on the market stalls", "the paper models from last spring",
    "an unusual collection of buttons", "the layout of the exhibition hall", "the printed cards",
    "the rules of the game", "their first prototype", "a box of forgotten stencils",
    "the mosaic near the station", "the quilt that hangs in the hall", "a stack of drawings",
    "the toys in the window", "the floor of the old chapel", "a series of woodcuts",
    "the signs along the canal", "the notebook her father kept", "the garden path",
    "the designs for the new playground", "a bag of coloured chalk", "the shelves of the archive",
    "the lesson plans for next term", "a handful of glass beads", "the maps in the town hall",
    "the fabric samples", "an old textbook on geometry", "the murals on the school wall",
    "a crate of building blocks", "the flags at the harbour", "the cards in the shoebox",
    "the tiles in the kitchen", "a pile of magazines from the seventies", "the kites",
    "the programme for the evening", "the wallpaper in the hallway", "a tray of biscuits",
    "the badges on his jacket", "the catalogue of the collection", "the sketches from the trip",
    "the window display", "a jar of paint brushes", "the board games in the cupboard",
    "the printed leaflets", "the cushions in the reading corner", "a roll of wrapping paper",
    "the lanterns in the courtyard", "the diagrams in the appendix", "the timetable",
]
_TAILS = [
    ", which made the whole project feel much more personal", " before the doors opened to the public",
    " and nobody seemed to mind", " with help from a few friends", " because the budget was small",
    " in a way that surprised everyone", ", although it took longer than planned",
    " during the long winter break", " for the first time in years", " while the others were at lunch",
    ", and the results were better than expected", " without telling anyone", " on a shoestring",
    " as part of a wider project", " so that the younger pupils could join in", " after the meeting",
    ", which is harder than it sounds", " with remarkable care", " in front of a small crowd",
    " long after everyone else had gone home", " for a local charity", " in the space of a weekend",
    ", and the neighbours soon noticed", " using only what was already in the shed",
    " under a heavy autumn sky", ", much to the delight of the children", " at a surprisingly low cost",
    " with a borrowed camera", " in the corner of the library", ", and then wrote about it online",
    " for a small exhibition", " in the back of a delivery van", " over several cups of tea",
    ", although some of it was lost", " before anyone could object",
]
_STANDALONE = [
    "Nobody really knows who started the tradition, but it has lasted for decades.",
    "It is easy to forget how much work goes into something that looks so simple.",
    "Some of the visitors stayed for hours, while others left after a few minutes.",
    "What mattered most, she said, was that everyone could take part.",
    "The idea was not new, but the way it was carried out certainly was.",
    "There is something calming about careful, repetitive work done by hand.",
    "A few people asked whether the project would continue next year.",
    "We will publish a longer interview with the organisers next month.",
    "If you have photographs of your own, we would love to hear from you.",
    "Not everything went to plan, of course, and the first attempt had to be abandoned.",
    "Tickets were free, although donations were gratefully accepted at the door.",
    "He admits that he had no idea what he was doing when he began.",
    "The building itself dates from the late nineteenth century.",
    "Children seemed to grasp the idea long before the adults did.",
    "It took three attempts and a great deal of glue to get it right.",
    "Several readers wrote in to say that they remembered it from their own school days.",
    "Why does this matter? Because small details shape how we see the world around us.",
    "The answer, as so often, turned out to be simpler than expected.",
    "Much of the material was donated by people who lived nearby.",
    "There was a long queue by the time the doors opened at ten.",
    "Is it art, or is it a lesson? The honest answer is probably both.",
    "Most of the pieces will remain on display until the end of the month.",
    "She still keeps the first one she ever made on her desk.",
    "Nothing about the process was rushed, and it shows.",
    "The workshop is open to anyone over the age of eight.",
    "Those who missed it can find a short video on the community website.",
    "In the end, the simplest designs were the ones people remembered.",
    "The whole thing cost less than a night out at the cinema.",
    "Each evening ended with a short discussion over tea and cake.",
    "It was, by all accounts, a very good year for the club.",
    "Old habits are hard to break, and some of the members still prefer pencil and paper.",
    "That question will have to wait for another article.",
    "We asked around, and nobody could remember a busier weekend.",
    "The project has since been copied by at least two other towns.",
    "Some things, it seems, never really go out of fashion.",
    "This is the third time the event has been held in the same hall.",
    "For many of the older members, it brought back happy memories.",
    "Funding for next year has not yet been confirmed.",
    "Practice, rather than talent, seems to be the secret.",
    "A full list of the participants is available on request.",
]
TITLE_TOPICS = [
    "A Weekend Workshop That Changed How Our Town Sees Patterns", "Inside the Little Museum of Everyday Design",
    "What Children Teach Us About Simple Pictures", "The Quiet Craft of Hand-Printed Cards",
    "Notes From the Annual Makers Fair", "How a Village Hall Became a Gallery",
    "Lessons From a Year of Teaching Art on a Budget", "The Story Behind the Station Mosaic",
    "Why Simple Pictures Are Harder Than They Look", "A Visit to the Old Printing Works",
    "Rediscovering the Toys in Grandmother's Attic", "Five Things We Learned at the Design Festival",
    "Meet the Volunteers Who Restore Old Signs", "An Afternoon With the Maths Club",
    "The Return of the Hand-Made Poster", "Small Studios, Big Ideas",
    "Behind the Scenes at the School Exhibition", "A Short History of the Town's Tiles",
    "Drawing Lessons for Absolute Beginners", "How We Built a Board Game in a Weekend",
    "The Archive Nobody Knew About", "Learning to See Again", "Making Space for Play",
    "The Library's New Reading Corner", "From Sketchbook to Street Mural",
]


class _Pool:
    """Draw items without replacement; refill (reshuffled) when empty."""

    def __init__(self, rng: random.Random, items: list[str]):
        self.rng = rng
        self.items = list(items)
        self.left: list[str] = []

    def draw(self) -> str:
        if not self.left:
            self.left = list(self.items)
            self.rng.shuffle(self.left)
        return self.left.pop()


class EnglishProse:
    """Sentence source for one page: no phrase is used twice until its bank is exhausted."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.openers = _Pool(rng, _OPENERS)
        self.subjects = _Pool(rng, _SUBJECTS)
        self.verbs = _Pool(rng, _VERBS)
        self.objects = _Pool(rng, _OBJECTS)
        self.tails = _Pool(rng, _TAILS)
        self.standalone = _Pool(rng, _STANDALONE)

    def sentence(self) -> str:
        r = self.rng.random()
        if r < 0.22:
            return self.standalone.draw()
        opener = self.openers.draw() if self.rng.random() < 0.4 else ""
        subj = self.subjects.draw()
        tail = self.tails.draw() if self.rng.random() < 0.6 else ""
        s = f"{opener}{subj} {self.verbs.draw()} {self.objects.draw()}{tail}."
        return s[0].upper() + s[1:]

    def paragraph(self, n_sentences: int) -> list[str]:
        return [self.sentence() for _ in range(n_sentences)]


# --------------------------------------------------------------------------- other languages

_FR = {
    "subj": ["Le professeur de dessin", "Une petite équipe de bénévoles", "Notre rédactrice", "La mairie",
             "Le personnel du musée", "Un ancien ingénieur du village", "La bibliothécaire",
             "Le comité du festival", "Une lectrice fidèle", "Le directeur de l'école",
             "Un menuisier à la retraite", "La classe du mercredi", "Le photographe du journal",
             "Une architecte de la côte", "Le club de mathématiques"],
    "verb": ["a longtemps étudié", "a présenté", "a retrouvé", "a soigneusement rangé", "a photographié",
             "a restauré avec patience", "a prêté", "a décrit en détail", "a réorganisé", "a découvert par hasard",
             "a réparé", "a recommandé", "a dessiné", "a exposé", "a raconté l'histoire de"],
    "obj": ["les vieux puzzles en bois", "une série de carreaux peints à la main", "les nouvelles affiches de la classe",
            "la mosaïque près de la gare", "une collection de boutons anciens", "les cartes imprimées",
            "le cahier de son grand-père", "les jeux de société du grenier", "les plans du nouveau parc",
            "les dessins des enfants", "la vitrine de la boutique", "les lanternes de la cour",
            "un vieux manuel de géométrie", "les panneaux le long du canal", "les tissus du marché"],
    "tail": [" avant l'ouverture des portes", " avec l'aide de quelques amis", " pendant les vacances d'hiver",
             " pour la première fois depuis des années", " sans prévenir personne", " pour une petite exposition",
             ", ce qui a surpris tout le monde", " devant un public attentif", " avec un budget très modeste",
             ", et les voisins l'ont vite remarqué", " dans un coin de la bibliothèque", " après la réunion"],
    "title": ["Un atelier qui a changé notre regard", "Dans les coulisses de l'exposition de l'école",
              "Les volontaires qui restaurent les vieux panneaux", "Une visite à l'ancienne imprimerie"],
}
_DE = {
    "subj": ["Die Kunstlehrerin", "Eine kleine Gruppe von Freiwilligen", "Unsere Redakteurin", "Die Stadtverwaltung",
             "Das Museumsteam", "Ein pensionierter Ingenieur aus dem Dorf", "Die Bibliothekarin",
             "Das Festivalkomitee", "Eine treue Leserin", "Der Schulleiter", "Ein Tischler im Ruhestand",
             "Die Mittwochsklasse", "Der Fotograf der Zeitung", "Eine Architektin von der Küste",
             "Der Mathematikclub"],
    "verb": [("hat", "lange untersucht"), ("hat", "vorgestellt"), ("hat", "wiedergefunden"),
             ("hat", "sorgfältig sortiert"), ("hat", "fotografiert"), ("hat", "geduldig restauriert"),
             ("hat", "ausgeliehen"), ("hat", "ausführlich beschrieben"), ("hat", "neu geordnet"),
             ("hat", "zufällig entdeckt"), ("hat", "repariert"), ("hat", "empfohlen"), ("hat", "gezeichnet"),
             ("hat", "ausgestellt"), ("hat", "mit großer Sorgfalt dokumentiert")],
    "obj": ["die alten Holzpuzzles", "eine Reihe handbemalter Fliesen", "die neuen Plakate im Klassenzimmer",
            "das Mosaik am Bahnhof", "eine Sammlung alter Knöpfe", "die gedruckten Karten",
            "das Notizbuch ihres Großvaters", "die Brettspiele vom Dachboden", "die Pläne für den neuen Spielplatz",
            "die Zeichnungen der Kinder", "das Schaufenster des Ladens", "die Laternen im Innenhof",
            "ein altes Lehrbuch der Geometrie", "die Schilder entlang des Kanals", "die Stoffe vom Markt"],
    "tail": ["vor der Eröffnung", "mit der Hilfe einiger Freunde", "während der Winterferien",
             "zum ersten Mal seit Jahren", "ohne jemandem davon zu erzählen", "für eine kleine Ausstellung",
             "vor einem aufmerksamen Publikum", "mit einem sehr kleinen Budget", "nach der Versammlung",
             "in einer Ecke der Bibliothek", "an einem verregneten Sonntag", "gemeinsam mit den Nachbarn"],
    "title": ["Ein Workshop, der unseren Blick verändert hat", "Hinter den Kulissen der Schulausstellung",
              "Die Freiwilligen, die alte Schilder restaurieren", "Ein Besuch in der alten Druckerei"],
}
_ES = {
    "subj": ["La profesora de dibujo", "Un pequeño grupo de voluntarios", "Nuestra redactora", "El ayuntamiento",
             "El personal del museo", "Un ingeniero jubilado del pueblo", "La bibliotecaria",
             "El comité del festival", "Una lectora fiel", "El director de la escuela", "Un carpintero jubilado",
             "La clase de los miércoles", "El fotógrafo del periódico", "Una arquitecta de la costa",
             "El club de matemáticas"],
    "verb": ["ha estudiado durante años", "ha presentado", "ha encontrado", "ha ordenado con cuidado",
             "ha fotografiado", "ha restaurado con paciencia", "ha prestado", "ha descrito con detalle",
             "ha reorganizado", "ha descubierto por casualidad", "ha reparado", "ha recomendado", "ha dibujado",
             "ha expuesto", "ha contado la historia de"],
    "obj": ["los viejos rompecabezas de madera", "una serie de azulejos pintados a mano",
            "los nuevos carteles del aula", "el mosaico cerca de la estación", "una colección de botones antiguos",
            "las tarjetas impresas", "el cuaderno de su abuelo", "los juegos de mesa del desván",
            "los planos del nuevo parque", "los dibujos de los niños", "el escaparate de la tienda",
            "los faroles del patio", "un viejo libro de geometría", "las señales a lo largo del canal",
            "las telas del mercado"],
    "tail": [" antes de la apertura", " con la ayuda de algunos amigos", " durante las vacaciones de invierno",
             " por primera vez en muchos años", " sin decírselo a nadie", " para una pequeña exposición",
             ", lo que sorprendió a todos", " delante de un público atento", " con un presupuesto muy pequeño",
             ", y los vecinos pronto se dieron cuenta", " en un rincón de la biblioteca", " después de la reunión"],
    "title": ["Un taller que cambió nuestra mirada", "Detrás de la exposición de la escuela",
              "Los voluntarios que restauran viejas señales", "Una visita a la antigua imprenta"],
}
FOREIGN_BANKS = {"fr": _FR, "de": _DE, "es": _ES}


class ForeignProse:
    def __init__(self, rng: random.Random, lang: str):
        self.rng = rng
        self.lang = lang
        b = FOREIGN_BANKS[lang]
        self.subj, self.verb = _Pool(rng, b["subj"]), _Pool(rng, b["verb"])
        self.obj, self.tail = _Pool(rng, b["obj"]), _Pool(rng, b["tail"])

    def sentence(self) -> str:
        subj, verb, obj = self.subj.draw(), self.verb.draw(), self.obj.draw()
        tail = self.tail.draw() if self.rng.random() < 0.7 else ""
        if self.lang == "de":
            aux, part = verb
            tail = f" {tail}" if tail else ""
            return f"{subj} {aux}{tail} {obj} {part}."
        return f"{subj} {verb} {obj}{tail}."

    def paragraph(self, n: int) -> list[str]:
        return [self.sentence() for _ in range(n)]

    def title(self) -> str:
        return self.rng.choice(FOREIGN_BANKS[self.lang]["title"])


# --------------------------------------------------------------------------- spam

_SPAM_KEYWORDS = ["cheap shapes", "best price", "buy now", "free shipping", "discount stickers",
                  "shape stickers sale", "top deals", "order today", "limited offer", "cheap colours"]


def spam_paragraphs(rng: random.Random, n: int) -> list[str]:
    """Keyword-stuffed paragraphs: the same few phrases over and over (fails word/char repetition filters)."""
    kws = rng.sample(_SPAM_KEYWORDS, 4)
    paras = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(12, 20)):
            parts.append(rng.choice(kws))
        paras.append(" ".join(parts).capitalize() + "! " + " ".join(kws).upper() + "!!!")
    return paras


def spam_title(rng: random.Random) -> str:
    return " ".join(k.title() for k in rng.sample(_SPAM_KEYWORDS, 3))


# --------------------------------------------------------------------------- metrics

_PUNCT_RE = re.compile(r"[^\w\s]")


def normalize_words(text: str) -> list[str]:
    """Words for shingling: lower-case, punctuation (anything not ``\\w`` or space) deleted, split on whitespace."""
    return _PUNCT_RE.sub("", text.lower()).split()


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    """The SET of word ``n``-gram shingles of ``text`` (a text shorter than n words gives one shingle)."""
    words = normalize_words(text)
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: str, b: str, n: int = 5) -> float:
    sa, sb = shingles(a, n), shingles(b, n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)
