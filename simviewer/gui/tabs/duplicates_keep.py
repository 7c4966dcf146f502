"""Which photo of a duplicate group is kept: the keeper rules (a preset, or the user's own order,
remembered) and the protected folders (preferred as keepers, never moved), behind the search bar's
"Keep:" box, its "Order…" button and its "Protected folders" menu."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from .duplicates_panels import KeepRulesDialog, SearchBar

KEEPER_PRESETS = {
    "Highest resolution, then largest file": ("resolution", "size", "oldest", "shortest-path"),
    "Oldest photo (EXIF date, else file time)": ("oldest", "resolution", "size", "shortest-path"),
    "Newest photo (EXIF date, else file time)": ("newest", "resolution", "size", "shortest-path"),
    "Largest file": ("size", "resolution", "oldest", "shortest-path"),
    "Shortest path": ("shortest-path", "resolution", "size", "oldest"),
}
CUSTOM_RULES = "Your order"


class KeeperChoice(QObject):
    """The keeper rules and the protected folders of the Duplicates tab."""

    rules_changed = Signal()
    reference_changed = Signal()

    def __init__(self, session, bar: SearchBar, parent: QWidget) -> None:
        super().__init__(parent)
        self.session, self.bar = session, bar
        self.reference: list[Path] = []
        self.custom_rules: tuple[str, ...] = ()  # the keeper rules in the user's own order
        self.dialog: KeepRulesDialog | None = None
        box = bar.keeper_box
        box.addItems(list(KEEPER_PRESETS))
        saved = session.settings.value("dedup/rules")
        if saved:
            self.custom_rules = tuple(str(saved).split(","))
            box.addItem(CUSTOM_RULES)
            box.setCurrentText(CUSTOM_RULES)
        box.currentIndexChanged.connect(lambda _i: self.rules_changed.emit())
        bar.rules_button.clicked.connect(lambda: self.edit(parent))
        self._show_reference()

    # -- rules ---------------------------------------------------------------------------------
    def rules(self) -> tuple[str, ...]:
        name = self.bar.keeper_box.currentText()
        return self.custom_rules if name == CUSTOM_RULES else KEEPER_PRESETS[name]

    def edit(self, parent: QWidget) -> KeepRulesDialog:
        """The keeper rules in order, editable; OK makes them "your order" (remembered)."""
        dialog = KeepRulesDialog(self.rules(), parent)
        dialog.accepted.connect(lambda: self.set_rules(dialog.rules()))
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        self.dialog = dialog
        return dialog

    def set_rules(self, rules: tuple[str, ...]) -> None:
        self.custom_rules = tuple(rules)
        self.session.settings.setValue("dedup/rules", ",".join(rules))
        box = self.bar.keeper_box
        if box.findText(CUSTOM_RULES) < 0:
            box.addItem(CUSTOM_RULES)
        box.setToolTip("Kept: " + " › ".join(rules))
        if box.currentText() == CUSTOM_RULES:
            self.rules_changed.emit()
        else:
            box.setCurrentText(CUSTOM_RULES)  # says rules_changed itself

    # -- protected folders ---------------------------------------------------------------------
    def choose_reference(self) -> None:
        library = self.session.library
        start = str(library.folder) if library else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self.parent(), "Protect a folder: its photos are never moved",
                                                  start)
        if folder:
            self.add_reference(Path(folder))

    def add_reference(self, folder: Path) -> None:
        if folder.resolve() not in self.reference:
            self.reference.append(folder.resolve())
        self._show_reference()
        self.reference_changed.emit()

    def remove_reference(self, folder: Path) -> None:
        self.reference = [f for f in self.reference if f != folder]
        self._show_reference()
        self.reference_changed.emit()

    def set_reference(self, folders: list[Path]) -> None:
        """Another library: its own protected folders (none), without regrouping."""
        self.reference = list(folders)
        self._show_reference()

    def _show_reference(self) -> None:
        self.bar.show_reference(self.reference, self.choose_reference, self.remove_reference)
