//! The small fixed vocabulary focusd reports objects in, whatever model found them: a
//! model's own class names differ (Open Images' "Person" and "Car", COCO's "person" and
//! "truck"), and alerts and the console want to say "a person" or "a vehicle". Each
//! detection keeps its model's class as a sub-label.

use serde::Serialize;

/// What kind of thing an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Category {
    Person,
    /// Cars, trucks, buses, motorcycles, trains, boats, aircraft.
    Vehicle,
    Bicycle,
    /// Pets, livestock, wildlife, birds.
    Animal,
    /// Anything else a model knows (furniture, bottles, shoes...).
    Object,
}

impl Category {
    /// Every category, in the order the configuration documents them.
    pub const ALL: [Category; 5] = [
        Category::Person,
        Category::Vehicle,
        Category::Bicycle,
        Category::Animal,
        Category::Object,
    ];

    /// The name on the wire and in the configuration (`roi.labels`).
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Person => "person",
            Category::Vehicle => "vehicle",
            Category::Bicycle => "bicycle",
            Category::Animal => "animal",
            Category::Object => "object",
        }
    }

    /// The category of a model's class name (Open Images or COCO, any case); a name it
    /// does not know is an [`Category::Object`].
    pub fn of(class: &str) -> Category {
        let class = class.trim().to_ascii_lowercase();
        match class.as_str() {
            "person" | "man" | "woman" | "boy" | "girl" | "pedestrian" => Category::Person,
            "bicycle" | "bike" => Category::Bicycle,
            "car" | "vehicle" | "truck" | "bus" | "motorcycle" | "motorbike" | "van" | "train"
            | "boat" | "airplane" | "aeroplane" | "taxi" | "ambulance" | "tractor" => {
                Category::Vehicle
            }
            "cat" | "dog" | "cattle" | "cow" | "horse" | "sheep" | "bird" | "elephant" | "bear"
            | "zebra" | "giraffe" | "animal" | "deer" | "fox" | "goat" | "pig" => Category::Animal,
            _ => Category::Object,
        }
    }

    /// The category named `name` (`person`, `vehicle`...), if it is one.
    pub fn parse(name: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(name.trim()))
    }
}

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a class is wanted by `labels` (`roi.labels`): each entry names a category or a
/// model's own class, in any case.
pub fn wanted(labels: &[String], class: &str) -> bool {
    let category = Category::of(class);
    labels.iter().any(|l| {
        l.trim().eq_ignore_ascii_case(class.trim()) || Category::parse(l) == Some(category)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_images_and_coco_names_fall_in_the_same_categories() {
        for (class, want) in [
            ("Person", Category::Person),
            ("person", Category::Person),
            ("Car", Category::Vehicle),
            ("Vehicle", Category::Vehicle),
            ("truck", Category::Vehicle),
            ("Bicycle", Category::Bicycle),
            ("Stationary bicycle", Category::Object),
            ("Dog", Category::Animal),
            ("Cattle", Category::Animal),
            ("bird", Category::Animal),
            ("Footwear", Category::Object),
            ("class7", Category::Object),
        ] {
            assert_eq!(Category::of(class), want, "{class}");
        }
    }

    #[test]
    fn labels_name_categories_or_classes() {
        let labels = ["person".to_string(), "Laptop".to_string()];
        assert!(wanted(&labels, "Person"));
        assert!(wanted(&labels, "pedestrian"));
        assert!(wanted(&labels, "laptop"), "a model's own class, any case");
        assert!(!wanted(&labels, "Car"));
        assert!(
            !wanted(&labels, "Mug"),
            "an object, but only Laptop is wanted"
        );
        assert!(wanted(&["vehicle".to_string()], "Car"));
        assert!(wanted(&["OBJECT".to_string()], "Mug"));
        assert_eq!(Category::parse(" Animal "), Some(Category::Animal));
        assert_eq!(Category::parse("tree"), None);
    }
}
